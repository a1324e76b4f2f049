"""The ``native-cpu`` rows of ``pvlm-bench``: the native runtime (``runtime/native``, C ABI over ONNX Runtime)
timed through ctypes, on the same preprocessed inputs as the Python runtime's rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# backend name -> precision of the native library's graphs
NATIVE_BACKENDS = {"native-cpu": "fp32", "native-cpu-int8": "int8"}


class NativeRunner:
    """``runtime.native.NativeDescriber`` (libpvlm) behind the harness's ``run`` call.

    Like the Python rows, it uses ONNX Runtime's process-wide thread pool (its worker process is its own);
    the greedy loop, the IO-bound cache and the timings are the library's.
    """

    def __init__(self, bundle: Path, backend: str, threads: int | None, max_batch: int, max_new_tokens: int):
        from runtime.native.library import NativeDescriber, NativeUnavailable

        try:
            self.describer = NativeDescriber(bundle, precision=NATIVE_BACKENDS[backend], threads=threads,
                                             max_batch=max_batch, max_new_tokens=max_new_tokens, shared_threads=True)
        except NativeUnavailable as e:
            raise ValueError(f"backend {backend}: {e}") from None
        self.name = backend

    def run(self, pixels: np.ndarray, max_new_tokens: int, stop_at_eos: bool) -> Any:
        """Greedy decode in the library (encoder, cross tables and every step in C++)."""
        from .speed_runners import RunResult

        rows, t = self.describer.generate(pixels, max_new_tokens, stop_at_eos=stop_at_eos)
        return RunResult([r.tokens for r in rows], [stop_at_eos and r.ended for r in rows], t["encode_ms"],
                         t["decode_ms"], int(t["steps"]))

    def peak_device_bytes(self) -> int | None:
        """CPU only: no device memory."""
        return None

    def close(self) -> None:
        """Close the library's bundle (sessions and buffers)."""
        self.describer.close()


__all__ = ["NATIVE_BACKENDS", "NativeRunner"]
