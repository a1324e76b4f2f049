"""ONNX Runtime backends (CPU, or CUDA with onnxruntime-gpu): two siblings built by one ``SessionLoader``.

``ort_backend`` picks the class: ``OrtBoundBackend`` runs ``cross_ort.onnx`` + ``decoder_ort.onnx``
with the cache bound in place on the session's device (see ``ort_bound.py``) when the bundle
has those graphs; ``OrtBackend`` runs the portable ``decoder.onnx`` with a host numpy cache
(``host_cache.py``; bundles exported before the ONNX Runtime graphs existed, or ``decoder="portable"``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..bundle import Bundle, BundleError
from .base import BackendUnavailable, Lifecycle
from .host_cache import DECODER_OUTPUTS, LOGITS_OUTPUTS, HostCacheBackend
from .ort_bound import MIN_ONNXRUNTIME, BoundDecoder, BoundState, bound_cache_verified, supports_bound_cache

log = logging.getLogger(__name__)

DECODERS = ("auto", "ort", "portable")
# ``lean``: on CPU the encoder runs at most ENCODER_CHUNK_PIXELS input pixels per call; ``fast``: one encoder
# call per batch. docs/benchmarks.md, "Memory", has both side by side.
MEMORY_MODES = ("lean", "fast")
# The encoder's activations grow with batch x height x width, and ONNX Runtime's CPU arena keeps the largest
# call's for the life of the session (with memory patterns, a second call of a new shape takes one new block
# for its whole plan beside the first call's). 8 images at 224x224 (seed-7m) or 21 at 192x96 (lite0) per call:
# peak RSS at batch 32 1.14 GB -> 0.41 GB and 0.31 -> 0.22 GB. Turning the arena off instead saved as much
# but cost 12% more CPU time (every call faults its activations in again).
ENCODER_CHUNK_PIXELS = 8 * 224 * 224
_shared_pool_threads: int | None = None  # size of the process-wide pool, once this module created it


def _shared_pool(threads: int | None) -> None:
    """Create ONNX Runtime's process-wide intra-op thread pool once; later sizes must match."""
    global _shared_pool_threads
    want = threads or 0  # 0: ONNX Runtime picks (one per physical core)
    if _shared_pool_threads is None:
        from onnxruntime.capi import onnxruntime_pybind11_state as C

        C.set_global_thread_pool_sizes(want, 1)
        _shared_pool_threads = want
    elif want != _shared_pool_threads:
        log.warning("the shared ONNX Runtime thread pool already has %s threads; threads=%s ignored",
                    _shared_pool_threads or "default", threads)


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailable("onnxruntime is not installed: pip install onnxruntime (or onnxruntime-gpu)") from None
    return onnxruntime


def encoder_chunks(batch: int, height: int, width: int, max_pixels: int | None) -> list[slice]:
    """Equal slices of a batch, each with at most ``max_pixels`` input pixels (at least one image); None: one."""
    per_call = batch if max_pixels is None else max(1, max_pixels // (height * width))
    calls = -(-batch // per_call)
    size = -(-batch // calls)  # equal sizes: ONNX Runtime plans memory once per input shape
    return [slice(i, min(i + size, batch)) for i in range(0, batch, size)]


def run_encoder(session: Any, pixels: np.ndarray, max_pixels: int | None) -> tuple[np.ndarray, ...]:
    """Encoder session on float32 (B, 3, H, W) in ``encoder_chunks``; its outputs (cross_k, cross_v, ...) whole."""
    parts = [session.run(None, {"pixels": pixels[s]})
             for s in encoder_chunks(pixels.shape[0], pixels.shape[2], pixels.shape[3], max_pixels)]
    if len(parts) == 1:
        return tuple(parts[0])
    # cross_k/cross_v are (L, B, H, N, Dh): each output is joined on the axis its shape names "batch"
    axes = [o.shape.index("batch") if "batch" in o.shape else 0 for o in session.get_outputs()]
    return tuple(np.concatenate([p[i] for p in parts], axis=axis) for i, axis in enumerate(axes))


def cuda_available() -> bool:
    """True when onnxruntime-gpu with a usable CUDA provider is installed."""
    try:
        return "CUDAExecutionProvider" in _ort().get_available_providers()
    except BackendUnavailable:
        return False


def choose_decoder(ort: Any, bundle: Bundle, decoder: str, precision: str = "fp32", device: str = "cpu") -> str:
    """The decoder graph to run: ``decoder_ort`` or ``decoder``, for a ``decoder`` choice of ``DECODERS``.

    A precision variant that replaces the portable decoder but not ``decoder_ort`` runs the
    portable one, so that ``precision`` means what it says for the decoder too. ``auto`` takes the
    IO-bound ``decoder_ort`` only on devices where its shared past/present buffer has been checked against
    the portable decoder (``ort_bound.VERIFIED_DEVICES``); ``ort`` asks for it anyway.
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    if precision not in bundle.precisions:  # e.g. FP16 TensorRT engines but no FP16 ONNX graphs
        raise BackendUnavailable(f"{bundle.root}: no {precision} ONNX graphs (export them with "
                                 f"pvlm-export onnx --{precision})")
    graphs = bundle.manifest.graphs
    has_ort_graphs = "decoder_ort" in graphs and "cross_ort" in graphs
    variant = bundle.variant_graphs(precision)
    if "decoder" in variant and "decoder_ort" not in variant:
        if decoder == "ort":
            raise BackendUnavailable(f"{bundle.root}: the bundle's {precision} graphs have no decoder_ort")
        return "decoder"
    if decoder == "portable":
        return "decoder"
    if not has_ort_graphs:
        if decoder == "ort":
            raise BackendUnavailable(f"{bundle.root}: the bundle has no cross_ort + decoder_ort graphs; re-export it")
        if "decoder_ort" in graphs:
            log.warning("%s: decoder_ort.onnx has the first layout (no cross_ort.onnx); using the portable "
                        "decoder.onnx. Re-export the bundle for the faster decoder.", bundle.root)
        return "decoder"
    if not supports_bound_cache(ort.__version__):
        reason = f"decoder_ort needs onnxruntime>={'.'.join(map(str, MIN_ONNXRUNTIME))} (this is {ort.__version__})"
        if decoder == "ort":
            raise BackendUnavailable(reason)
        log.warning("%s; using the portable decoder.onnx", reason)
        return "decoder"
    if decoder == "auto" and not bound_cache_verified(device):
        log.info("decoder_ort is not yet verified on %s; using the portable decoder.onnx (decoder='ort' forces it)",
                 device)
        return "decoder"
    return "decoder_ort"


class SessionLoader:
    """Every ONNX Runtime session of a backend: one place for session options, providers and load errors.

    ``shared_threads``: run the sessions on ONNX Runtime's process-wide thread pool, so the
    encoder's threads can spin without stealing cores from the decoder's (about 20% faster at
    batch 1 on two cores). Process-wide: afterwards every ONNX Runtime session in the process
    must use that pool, so turn it on only in a process that pvlm owns (pvlm-bench's workers do).

    ``memory`` (one of ``MEMORY_MODES``): ``lean`` (default) runs the encoder on CPU in equal chunks of at
    most ``ENCODER_CHUNK_PIXELS`` input pixels, so the memory arena holds one chunk's activations rather than
    the whole batch's; ``fast`` runs a batch in one encoder call.
    """

    def __init__(self, bundle: Bundle, device: str = "cpu", threads: int | None = None,
                 providers: list[Any] | None = None, shared_threads: bool = False, precision: str = "fp32",
                 memory: str = "lean"):
        if memory not in MEMORY_MODES:
            raise ValueError(f"memory must be one of {', '.join(MEMORY_MODES)}, got {memory!r}")
        self.ort = _ort()
        if device == "cuda" and not cuda_available():
            raise BackendUnavailable("onnxruntime-cuda needs onnxruntime-gpu and an NVIDIA GPU")
        self.bundle, self.device, self.precision = bundle, device, precision
        self.name = f"onnxruntime-{device}"
        self.memory = memory
        # chunking trades batch efficiency on a GPU, where it is not measured yet: CPU only
        self.encoder_pixels = ENCODER_CHUNK_PIXELS if memory == "lean" and device == "cpu" else None
        self.thread_pool = "shared" if shared_threads else "per-session"
        if shared_threads:
            _shared_pool(threads)
        self.providers = providers or (["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda"
                                       else ["CPUExecutionProvider"])
        self._per_step = self._options(threads, shared_threads, spin=True)
        # With its own pool, a graph run once per batch (encoder, cross_ort) must not leave threads spinning on
        # the cores the decoder steps need next (batch 1 end to end: 62 ms without spinning, 87 ms with it;
        # force_spinning_stop slowed the encoder itself by half).
        self._per_batch = self._options(threads, shared_threads, spin=shared_threads)

    def _options(self, threads: int | None, shared_threads: bool, spin: bool) -> Any:
        ort = self.ort
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if shared_threads:
            opts.use_per_session_threads = False
        elif threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        if not spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return opts

    def load(self, graph: str, *, per_step: bool = False) -> Any:
        """An InferenceSession for a bundle graph in this precision; ``per_step``: the decoder step (may spin).

        A file ONNX Runtime cannot load is a BundleError naming it.
        """
        path = self.bundle.path(graph, self.precision)
        opts = self._per_step if per_step else self._per_batch
        try:
            return self.ort.InferenceSession(str(path), opts, providers=self.providers)
        except Exception as e:  # noqa: BLE001 - ORT raises its own classes (InvalidProtobuf, Fail, InvalidGraph...)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BundleError(f"{path}: ONNX Runtime cannot load this graph ({type(e).__name__}: {first[:160]})") \
                from None


def ort_backend(bundle: Bundle, device: str = "cpu", *, decoder: str = "auto", precision: str = "fp32",
                **options: Any) -> OrtBackend | OrtBoundBackend:
    """The ONNX Runtime backend for ``bundle`` on ``device`` in ``precision``.

    ``options`` (threads, providers, shared_threads, memory) go to :class:`SessionLoader`.
    """
    graph = choose_decoder(_ort(), bundle, decoder, precision, device)
    loader = SessionLoader(bundle, device, precision=precision, **options)
    return OrtBoundBackend(loader) if graph == "decoder_ort" else OrtBackend(loader)


class OrtBackend(HostCacheBackend):
    """Encoder + portable decoder-step sessions, the cache in host numpy arrays."""

    decoder_graph = "decoder"

    def __init__(self, loader: SessionLoader):
        """Sessions from ``loader`` (which says the device, precision and threads)."""
        self.name, self.precision, self.thread_pool = loader.name, loader.precision, loader.thread_pool
        self.memory, self._encoder_pixels = loader.memory, loader.encoder_pixels
        self.decoder = loader.load(self.decoder_graph, per_step=True)
        self.encoder = loader.load("encoder")
        super().__init__(loader.bundle.model_config)

    def run_encoder(self, pixels: np.ndarray) -> tuple[np.ndarray, ...]:
        """Encoder session: cross_k, cross_v[, attributes]."""
        return run_encoder(self.encoder, pixels, self._encoder_pixels)

    def run_decoder(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Portable decoder-step session; numpy inputs are passed by reference (no copy on CPU)."""
        ids, nk, nv = self.decoder.run(DECODER_OUTPUTS, feeds)
        return ids, nk, nv

    def run_decoder_logits(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The same step, fetching the logits (B, vocab) instead of the next ids."""
        logits, nk, nv = self.decoder.run(LOGITS_OUTPUTS, feeds)
        return logits, nk, nv

    def _release(self) -> None:
        self.encoder = self.decoder = None


class OrtBoundBackend(Lifecycle):
    """Encoder, ``cross_ort`` and ``decoder_ort`` sessions; the cache and cross tables stay on the device.

    A sibling of :class:`OrtBackend` (same loader, same encoder), not a kind of it: the host cache
    is never used here, :class:`BoundDecoder` owns the per-batch buffers.
    """

    decoder_graph = "decoder_ort"

    def __init__(self, loader: SessionLoader):
        """Sessions from ``loader`` (which says the device, precision and threads)."""
        self.name, self.precision, self.thread_pool = loader.name, loader.precision, loader.thread_pool
        self.memory, self._encoder_pixels = loader.memory, loader.encoder_pixels
        step = loader.load(self.decoder_graph, per_step=True)
        self.encoder = loader.load("encoder")
        self.bound = BoundDecoder(loader.ort, step, loader.load("cross_ort"), loader.bundle.model_config, loader.device)

    def encode(self, pixels: np.ndarray, capacity: int) -> BoundState:
        """Run the encoder and the cross tables; an empty cache of ``capacity`` slots on the device."""
        ck, cv, *heads = run_encoder(self.encoder, pixels, self._encoder_pixels)
        state = self.bound.start(ck, cv, capacity)
        state.attributes = heads[0] if heads else None
        return state

    def step(self, state: BoundState, tokens: np.ndarray, position: int) -> np.ndarray:
        """One decoder step at ``position``; next ids (B,) int64."""
        return self.bound.step(state, tokens, position)

    def step_logits(self, state: BoundState, tokens: np.ndarray, position: int) -> np.ndarray:
        """One decoder step at ``position``; the logits (B, vocab) float32 on the host."""
        self.bound.step(state, tokens, position)
        return self.bound.logits(state)

    def keep(self, state: BoundState, rows: np.ndarray) -> None:
        """Keep only ``rows`` of the batch (may repeat rows)."""
        self.bound.keep(state, rows)

    def reorder(self, state: BoundState, rows: np.ndarray, length: int) -> None:
        """Beam reorder of the shared past/present buffers, in place (the binding stays)."""
        self.bound.reorder(state, rows, length)

    def _release(self) -> None:
        self.encoder = self.bound = None
