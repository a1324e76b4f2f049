"""Each backend runs in its own process, driven round-robin by the harness.

Why: backends in one process disturb each other (PyTorch's OpenMP threads keep spinning
after their work and steal cores from ONNX Runtime's pool, and vice versa), and a shared
process makes "peak host memory" meaningless. A worker times its own calls, so pipe
transfers never enter the measurements.
"""

from __future__ import annotations

import enum
import multiprocessing as mp
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from .speed_runners import RunResult, make_runner


class Slot(enum.Enum):
    """Named input slots of a worker, beside the per-batch-size ones (keyed by the batch size)."""

    SETTLE = "settle"  # the one-image input of the untimed call before every timed one
    TOKEN_SWEEP = "token-sweep"  # the --sweep-batch images of the token sweep


SlotKey = int | Slot  # a batch size, or a named slot


class PeakRSS:
    """Peak resident set size of this process during a ``with`` block, in bytes (``peak``).

    Reads the kernel's own high-water mark (VmHWM), reset on entry through
    ``/proc/self/clear_refs``: no sampling thread competes with the run being timed. Where the
    reset is refused, ``peak`` is the process's lifetime peak, an upper bound.
    """

    def __init__(self) -> None:
        self.peak = 0

    @staticmethod
    def _hwm() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return 0

    def __enter__(self) -> "PeakRSS":
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.peak = self._hwm()
        except OSError:
            self.peak = 0


def _worker(conn: Any, name: str, bundle: str | None, checkpoint: str | None, threads: int | None,
            max_batch: int, max_new_tokens: int) -> None:
    try:
        runner = make_runner(name, Path(bundle) if bundle else None, Path(checkpoint) if checkpoint else None,
                             threads, max_batch, max_new_tokens)
        conn.send(("ok", None))
    except Exception as e:  # noqa: BLE001 - reported to the parent as one line
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    pixels: dict[SlotKey, np.ndarray] = {}
    while True:
        msg = conn.recv()
        if msg[0] == "stop":
            runner.close()
            return
        try:
            if msg[0] == "load":
                pixels[msg[1]] = msg[2]
                conn.send(("ok", None))
            elif msg[0] == "run":
                _, key, n, stop_at_eos = msg
                with PeakRSS() as mem:
                    res = runner.run(pixels[key], n, stop_at_eos)
                conn.send(("ok", (res, mem.peak, runner.peak_device_bytes())))
        except Exception:  # noqa: BLE001
            conn.send(("error", traceback.format_exc(limit=3)))


class WorkerRunner:
    """A runner living in a child process (spawned, so no state leaks from the parent)."""

    def __init__(self, name: str, bundle: Path | None, checkpoint: Path | None, threads: int | None,
                 max_batch: int, max_new_tokens: int):
        self.name = name
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker, daemon=True, args=(
            child, name, str(bundle) if bundle else None, str(checkpoint) if checkpoint else None, threads,
            max_batch, max_new_tokens))
        self._proc.start()
        self._call(None)
        self.last_peak_rss = 0
        self.last_device_bytes: int | None = None

    def _call(self, msg: tuple | None) -> Any:
        if msg is not None:
            self._conn.send(msg)
        status, payload = self._conn.recv()
        if status != "ok":
            raise ValueError(f"backend {self.name}: {payload.strip().splitlines()[-1]}")
        return payload

    def load(self, key: SlotKey, pixels: np.ndarray) -> None:
        """Send the inputs once; runs refer to them by ``key`` (a batch size or a :class:`Slot`)."""
        self._call(("load", key, pixels))

    def run_key(self, key: SlotKey, max_new_tokens: int, stop_at_eos: bool) -> RunResult:
        """Timed call inside the worker; remembers its peak RSS and device memory."""
        res, self.last_peak_rss, self.last_device_bytes = self._call(("run", key, max_new_tokens, stop_at_eos))
        return res

    def close(self) -> None:
        """Stop the worker process."""
        try:
            self._conn.send(("stop",))
        except (BrokenPipeError, OSError):
            pass
        self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.kill()
