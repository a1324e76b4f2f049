"""What the harness times: a runtime backend, or a PyTorch baseline, behind one ``run`` call."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

TORCH_BACKENDS = ("torch", "torch-naive", "torch-original")
# Runtime backends with a non-default option, to measure an option side by side with the default:
# the portable decoder, ONNX Runtime's own memory settings (``memory="fast"``: the arena, one encoder call per
# batch) against the runtime's lean default, and each precision variant a bundle can hold (``onnxruntime-cpu-int8``).
PRECISION_BACKENDS = ("onnxruntime-cpu", "onnxruntime-cuda")
RUNTIME_VARIANTS = {
    "onnxruntime-cpu-portable": ("onnxruntime-cpu", {"decoder": "portable"}),
    "onnxruntime-cpu-fast": ("onnxruntime-cpu", {"memory": "fast"}),
    **{f"{b}-{p}": (b, {"precision": p}) for b in PRECISION_BACKENDS for p in ("fp16", "int8")},
}


#: Separates a backend from its decoding in a row name: ``onnxruntime-cpu+beams3`` (greedy rows keep the plain name).
DECODING_SEP = "+"


def decoding_rows(backends: tuple[str, ...], decodings: tuple[str, ...]) -> tuple[str, ...]:
    """``backends`` with one row per decoding (``greedy``, ``beamsN``, ``sample``, ``original``) for each ONNX
    Runtime backend (the backends that return logits); other backends keep their one greedy row."""
    out: list[str] = []
    for name in backends:
        if not name.startswith("onnxruntime"):
            out.append(name)
            continue
        out += [name if label == "greedy" else f"{name}{DECODING_SEP}{label}" for label in decodings]
    return tuple(dict.fromkeys(out))


def split_row(row: str) -> tuple[str, str]:
    """A row name -> (backend, decoding label)."""
    backend, _, label = row.partition(DECODING_SEP)
    return backend, label or "greedy"


def precision_rows(backends: tuple[str, ...], precisions: tuple[str, ...]) -> tuple[str, ...]:
    """``backends`` with a ``<backend>-<precision>`` row after each ONNX Runtime one, per non-FP32 precision."""
    out: list[str] = []
    for name in backends:
        out.append(name)
        if name in PRECISION_BACKENDS:
            out += [f"{name}-{p}" for p in precisions if p != "fp32"]
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class RunResult:
    """One timed call: per-row token ids, which rows ended at EOS, and where the time went (ms).

    ``tokens`` holds real ids only. Fixed work (``stop_at_eos=False``) lists every generated id, EOS
    included, and ``ended`` is all False; with ``stop_at_eos`` a row stops before its EOS, and
    ``ended`` says whether it produced one within the limit.
    """

    tokens: list[list[int]]
    ended: list[bool]
    encode_ms: float
    decode_ms: float
    steps: int

    @property
    def total_ms(self) -> float:
        """End-to-end time of the call."""
        return self.encode_ms + self.decode_ms

    @property
    def n_tokens(self) -> int:
        """Tokens generated, each row's EOS counted (so fixed-work runs count max_new_tokens per row)."""
        return sum(len(t) for t in self.tokens) + sum(self.ended)


class Runner(Protocol):
    """A backend under test."""

    name: str

    def run(self, pixels: np.ndarray, max_new_tokens: int, stop_at_eos: bool) -> RunResult:
        """Describe preprocessed float32 (B, 3, H, W)."""

    def peak_device_bytes(self) -> int | None:
        """Peak GPU memory since the last reset, where measurable."""

    def close(self) -> None:
        """Release what the runner holds (sessions, threads)."""


class RuntimeRunner:
    """``runtime.Describer`` on one of its backends (the product under test), decoding with ``decoding`` (a label
    of ``DecodingOptions.parse``; greedy by default)."""

    def __init__(self, bundle: Path, backend: str, threads: int | None, max_batch: int, max_new_tokens: int,
                 decoding: str = "greedy"):
        from runtime import Describer
        from runtime.decoding import DecodingOptions

        self.decoding = None if decoding == "greedy" else DecodingOptions.parse(decoding)

        runtime_name, options = RUNTIME_VARIANTS.get(backend, (backend, {}))
        # Each backend has a worker process of its own, so ONNX Runtime's shared thread pool is safe here.
        if "memory" in options:  # a SessionLoader option Describer does not take: build the backend here
            from runtime.backends.ort import ort_backend
            from runtime.bundle import Bundle

            loaded = Bundle.load(bundle)
            ready = ort_backend(loaded, runtime_name.split("-")[1], threads=threads, shared_threads=True, **options)
            self.describer = Describer(loaded, backend=ready, max_batch=max_batch, max_new_tokens=max_new_tokens)
        else:
            self.describer = Describer(bundle, backend=runtime_name, threads=threads, max_batch=max_batch,
                                       max_new_tokens=max_new_tokens, shared_threads=True, **options)
        self.name = backend if self.decoding is None else f"{backend}{DECODING_SEP}{decoding}"

    def run(self, pixels: np.ndarray, max_new_tokens: int, stop_at_eos: bool) -> RunResult:
        """Greedy decode through the runtime's own loop; beam search and sampling always stop at EOS (their
        rows end when the image is done), and the best sequence of each image is the row's tokens."""
        if self.decoding is not None:
            hyps, t = self.describer.generate(pixels, self.decoding, max_new_tokens)
            ids = [h[0].tokens for h in hyps]
            return RunResult(ids, [len(row) < max_new_tokens for row in ids], t["encode_ms"], t["decode_ms"],
                             int(t["steps"]))
        ids, t = self.describer.generate_ids(pixels, max_new_tokens, stop_at_eos=stop_at_eos)
        # with stop_at_eos, rows come back without their EOS: a row shorter than the limit produced one
        ended = [stop_at_eos and len(row) < max_new_tokens for row in ids]
        return RunResult(ids, ended, t["encode_ms"], t["decode_ms"], int(t["steps"]))

    def peak_device_bytes(self) -> int | None:
        """Not measurable from ONNX Runtime's Python API."""
        return None

    def close(self) -> None:
        """Close the describer's sessions."""
        self.describer.close()


class TorchRunner:
    """The PyTorch reference: ``torch`` (KV cache), ``torch-naive`` (re-run the whole prefix per token) or
    ``torch-original`` (the original repository's loop: also re-projects the cross-attention K/V and
    filters top-k/top-p every step; see :func:`pvlm.reference.decode_like_original`)."""

    def __init__(self, checkpoint: Path, backend: str, threads: int | None, device: str = "cpu"):
        import torch

        import pvlm

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.model, _, _ = pvlm.load_checkpoint(checkpoint)
        self.device = torch.device(device)
        self.model.to(self.device)
        self.use_cache = backend == "torch"
        self.original = backend == "torch-original"
        self.name = backend

    def _sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def run(self, pixels: np.ndarray, max_new_tokens: int, stop_at_eos: bool) -> RunResult:
        """Encoder, then the reference greedy decoder (cached or naive) on its output."""
        from pvlm.reference import decode_greedy, decode_like_original

        torch, model = self.torch, self.model
        with torch.no_grad():
            x = torch.from_numpy(pixels).to(self.device)
            self._sync()
            t0 = time.perf_counter()
            visual = model.encode_image(x)
            if not self.original:
                cross_k, cross_v = model.cross_kv(visual)
            self._sync()
            t1 = time.perf_counter()
            if self.original:
                ids = decode_like_original(model, visual, max_new_tokens, stop_at_eos)
            else:
                ids = decode_greedy(model, cross_k, cross_v, max_new_tokens, self.use_cache, stop_at_eos)
            self._sync()
            t2 = time.perf_counter()
        rows, ended = _rows_and_ends(ids.tolist(), model.cfg.eos_id, model.cfg.pad_id, stop_at_eos)
        return RunResult(rows, ended, (t1 - t0) * 1e3, (t2 - t1) * 1e3, ids.shape[1])

    def peak_device_bytes(self) -> int | None:
        """torch's CUDA allocator peak."""
        if self.device.type != "cuda":
            return None
        return int(self.torch.cuda.max_memory_allocated())

    def close(self) -> None:
        """Nothing to release: the model goes with the worker process."""


def _rows_and_ends(ids: list[list[int]], eos: int, pad: int, stop_at_eos: bool) -> tuple[list[list[int]], list[bool]]:
    """The reference decoder's (B, T) ids as the runtime returns them: fixed work keeps every id; with
    ``stop_at_eos`` each row is cut before its first EOS (and its padding dropped), and marked ended."""
    if not stop_at_eos:
        return ids, [False] * len(ids)
    rows, ended = [], []
    for r in ids:
        cut = r.index(eos) if eos in r else len(r)
        rows.append([i for i in r[:cut] if i != pad])
        ended.append(eos in r)
    return rows, ended


def make_runner(name: str, bundle: Path | None, checkpoint: Path | None, threads: int | None,
                max_batch: int, max_new_tokens: int) -> Any:
    """A runner by row name: a backend, or ``backend+decoding`` for a runtime backend (``onnxruntime-cpu+beams3``)."""
    name, decoding = split_row(name)
    if decoding != "greedy" and not name.startswith("onnxruntime"):
        raise ValueError(f"backend {name}: only the ONNX Runtime backends decode with {decoding} (they return logits)")
    if name in TORCH_BACKENDS:
        if checkpoint is None or not Path(checkpoint).is_file():
            raise ValueError(f"backend {name} needs the PyTorch checkpoint (--checkpoint, or a bundle whose source exists)")
        return TorchRunner(checkpoint, name, threads)
    if bundle is None:
        raise ValueError(f"backend {name} needs an export bundle")
    from .native_runner import NATIVE_BACKENDS, NativeRunner

    if name in NATIVE_BACKENDS:
        return NativeRunner(bundle, name, threads, max_batch, max_new_tokens)
    return RuntimeRunner(bundle, name, threads, max_batch, max_new_tokens, decoding)
