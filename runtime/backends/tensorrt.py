"""TensorRT backend: the bundle's engines (``pvlm-export trt``) through the TensorRT 10 API and cuda-python.

Buffers are allocated once per max batch (a set per batch in flight, reused from a pool): the
encoder writes cross K/V straight into the set's device buffers, the decoder step reads them
and the cache in place, and each step's K/V (``new_k``/``new_v``, (L, B, H, 1, Dh)) is copied
into cache slot ``position`` on the device with one strided 2-D copy. Per step only the token
ids go up and the next ids come back, through pinned host memory. Finished rows are compacted
on the device. Every copy and clear is sized from the engine's own tensor dtypes. No torch;
tensorrt and cuda-python are imported when the backend starts.

A batch's buffers go back to the pool from the finalizer of its state, which the garbage
collector may run on any thread at any allocation, including a thread inside ``step`` that
holds the execution lock; so the hand-back takes no lock (an atomic deque append).

Written without access to a GPU: its GPU tests are marked ``gpu``/``tensorrt``; on CPU,
``tests/test_runtime_tensorrt_emulated.py`` runs this code on an emulated CUDA runtime with
ONNX Runtime standing in for the engines.
"""

from __future__ import annotations

import collections
import ctypes
import functools
import logging
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..bundle import Bundle
from ..engines import Engine, mismatch, select
from .base import BackendUnavailable, Lifecycle

log = logging.getLogger(__name__)

GRAPHS = ("encoder", "decoder")
INSTALL_HINT = "pip install tensorrt cuda-python (tensorrt from NVIDIA's package index, https://pypi.nvidia.com)"


class EngineMismatch(BackendUnavailable):
    """The bundle's engines were built for another TensorRT version or GPU architecture."""


def import_cudart() -> Any | None:
    """cuda-python's runtime module (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6), None if absent."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError:
            return None
    return cudart


def _imports() -> tuple[Any, Any]:
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable(f"tensorrt is not installed: {INSTALL_HINT}") from None
    cudart = import_cudart()
    if cudart is None:
        raise BackendUnavailable(f"cuda-python is not installed: {INSTALL_HINT}")
    return trt, cudart


def _check(result: Any) -> Any:
    """cuda-python returns (err, *values); raise on error, return the value(s)."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return rest[0] if len(rest) == 1 else tuple(rest) or None


def gpu_compute_capability(cudart: Any | None = None) -> tuple[str, str] | None:
    """(GPU name, "major.minor") of CUDA device 0, or None without cuda-python or a usable GPU."""
    cudart = cudart or import_cudart()
    if cudart is None:
        return None
    try:
        if _check(cudart.cudaGetDeviceCount()) < 1:
            return None
        prop = _check(cudart.cudaGetDeviceProperties(0))
    except Exception:  # noqa: BLE001 - no driver / no libcudart / no device: no GPU for our purposes
        return None
    name = prop.name.decode(errors="replace").rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
    return name, f"{prop.major}.{prop.minor}"


def find_engines(bundle: Bundle, precision: str, tensorrt_version: str, compute_capability: str) -> dict[str, Engine]:
    """The bundle's TensorRT plans for ``precision``, checked against this TensorRT and GPU.

    Raises :class:`BackendUnavailable` when the bundle has none, :class:`EngineMismatch`
    when they were built elsewhere.
    """
    engines = select(bundle.engines, "tensorrt-plan", precision, GRAPHS)
    if set(engines) != set(GRAPHS):
        raise BackendUnavailable(f"{bundle.root}: no {precision} TensorRT engines "
                                 f"(build them with pvlm-export trt{' --fp16' if precision == 'fp16' else ''})")
    for e in engines.values():
        why = mismatch(e, tensorrt_version, compute_capability)
        if why:
            raise EngineMismatch(f"{why}; rebuild with pvlm-export trt on this machine")
    return engines


@functools.lru_cache(maxsize=None)
def warn_once(message: str) -> None:
    """Log ``message`` as a warning the first time only (engine mismatches are met on every Describer)."""
    log.warning("%s", message)


@dataclass
class _Buffer:
    device: int  # device pointer
    nbytes: int
    dtype: np.dtype
    host: np.ndarray | None = None  # pinned host mirror (only for what crosses the bus)


class _BufferSet:
    """Device buffers for one batch in flight at the max batch size (+ pinned host mirrors)."""

    def __init__(self, cudart: Any, sizes: dict[str, tuple[int, np.dtype]], pinned: tuple[str, ...]):
        self._cudart = cudart
        self.bufs: dict[str, _Buffer] = {}
        self._host_ptrs: list[int] = []
        for name, (nbytes, dtype) in sizes.items():
            buf = _Buffer(int(_check(cudart.cudaMalloc(nbytes))), nbytes, dtype)
            if name in pinned:
                ptr = int(_check(cudart.cudaMallocHost(nbytes)))
                self._host_ptrs.append(ptr)
                raw = (ctypes.c_uint8 * nbytes).from_address(ptr)
                buf.host = np.frombuffer(raw, np.uint8).view(dtype)
            self.bufs[name] = buf

    def free(self) -> None:
        """Release the device and pinned memory."""
        for buf in self.bufs.values():
            self._cudart.cudaFree(buf.device)
        for ptr in self._host_ptrs:
            self._cudart.cudaFreeHost(ptr)
        self.bufs, self._host_ptrs = {}, []


@dataclass
class TrtState:
    """One batch in flight: its buffer set, current batch size and cache capacity."""

    buffers: _BufferSet
    batch: int
    capacity: int
    attributes: np.ndarray | None = None  # the encoder's attribute-head probabilities (B, values), as encoded


class TensorRTBackend(Lifecycle):
    """Encoder and decoder-step TensorRT engines; buffers on the GPU for the whole batch.

    ``close`` waits for the call in flight, then frees the pooled buffers, the stream and the engines;
    a batch still holding buffers frees them when its state is dropped.
    """

    name = "tensorrt"

    def __init__(self, bundle: Bundle, precision: str = "fp32", **_options: Any):
        """``precision``: which engines to run (``fp32`` or ``fp16``); ONNX Runtime options are ignored."""
        trt, cudart = _imports()
        gpu = gpu_compute_capability(cudart)
        if gpu is None:
            raise BackendUnavailable("no NVIDIA GPU (cuda-python finds no CUDA device)")
        engines = find_engines(bundle, precision, trt.__version__, gpu[1])
        self.precision, self.gpu = precision, gpu[0]
        self._trt, self._cudart = trt, cudart
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        self._engines, self._contexts = {}, {}
        for graph, e in engines.items():
            bundle.verify([e.file])
            engine = runtime.deserialize_cuda_engine((bundle.root / e.file).read_bytes())
            if engine is None:
                raise BackendUnavailable(f"{bundle.root / e.file}: TensorRT could not deserialize the engine")
            self._engines[graph] = engine
            self._contexts[graph] = engine.create_execution_context()
        m = bundle.model_config
        self.layers, self.heads, self.head_dim = m.n_layers, m.n_heads, m.head_dim
        self.n_visual = int(bundle.graph("decoder").inputs["cross_k"].shape[3])
        self.max_batch, self.max_capacity = bundle.limits.max_batch, bundle.limits.max_new_tokens
        heads = bundle.manifest.attribute_heads  # an encoder with heads: its probabilities come back to the host
        self._heads_output = (heads.output,) if heads is not None else ()
        self._sizes = self._buffer_sizes()
        for new, cache in (("new_k", "cache_k"), ("new_v", "cache_v")):
            if self._sizes[new][1] != self._sizes[cache][1]:  # each step's K/V are copied into the cache as bytes
                raise BackendUnavailable(f"{bundle.root}: decoder engine {new} is {self._sizes[new][1]} but "
                                         f"{cache} is {self._sizes[cache][1]}; rebuild with pvlm-export trt")
        self._stream = _check(cudart.cudaStreamCreate())
        self._pool: collections.deque[_BufferSet] = collections.deque()  # append/pop are atomic: no lock
        self._lock = threading.Lock()  # the execution contexts are shared: one call at a time

    def _buffer_sizes(self) -> dict[str, tuple[int, np.dtype]]:
        """Every engine I/O tensor at its profile's max shape (encoder outputs are the decoder's cross inputs)."""
        trt, sizes = self._trt, {}
        for engine in self._engines.values():
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
                if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                    shape = engine.get_tensor_profile_shape(name, 0)[2]
                else:
                    shape = [self._max_dim(name, a, d) for a, d in enumerate(engine.get_tensor_shape(name))]
                nbytes = int(np.prod(shape)) * dtype.itemsize
                sizes[name] = (max(nbytes, sizes.get(name, (0,))[0]), dtype)
        return sizes

    def _max_dim(self, name: str, axis: int, dim: int) -> int:
        # the only dynamic output dimension is the batch (axis 0 of logits/next_ids, 1 of the K/V tensors)
        return dim if dim >= 0 else self.max_batch

    def _take(self) -> _BufferSet:
        try:
            return self._pool.pop()
        except IndexError:
            return _BufferSet(self._cudart, self._sizes,
                              pinned=("pixels", "tokens", "positions", "next_ids", *self._heads_output))

    def _give_back(self, buffers: _BufferSet) -> None:
        """A finished batch's buffers back to the pool (the finalizer of its state; takes no lock)."""
        self._pool.append(buffers)
        if self.closed:  # checked after the append: either this or ``_release`` frees them
            self._free_pooled()

    def _free_pooled(self) -> None:
        while True:
            try:
                buffers = self._pool.pop()
            except IndexError:
                return
            buffers.free()

    def _release(self) -> None:
        with self._lock:  # the call in flight finishes first; the next one sees ``closed``
            self._free_pooled()
            self._cudart.cudaStreamDestroy(self._stream)
            self._contexts, self._engines = {}, {}

    def _run(self, graph: str, shapes: dict[str, tuple[int, ...]], bufs: _BufferSet,
             addresses: dict[str, int] | None = None) -> None:
        ctx = self._contexts[graph]
        engine = self._engines[graph]
        for name, shape in shapes.items():
            ctx.set_input_shape(name, shape)
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            ctx.set_tensor_address(name, (addresses or {}).get(name, bufs.bufs[name].device))
        if not ctx.execute_async_v3(int(self._stream)):
            raise RuntimeError(f"TensorRT {graph} engine failed to run")

    def _copy(self, dst: int, src: int, nbytes: int, kind: str) -> None:
        kinds = self._cudart.cudaMemcpyKind
        k = {"h2d": kinds.cudaMemcpyHostToDevice, "d2h": kinds.cudaMemcpyDeviceToHost,
             "d2d": kinds.cudaMemcpyDeviceToDevice}[kind]
        _check(self._cudart.cudaMemcpyAsync(dst, src, nbytes, k, self._stream))

    def _host_ptr(self, arr: np.ndarray) -> int:
        return arr.ctypes.data

    def encode(self, pixels: np.ndarray, capacity: int) -> TrtState:
        """Encoder into the set's cross K/V buffers; zeroed cache of ``capacity`` slots on the device."""
        b = pixels.shape[0]
        if b > self.max_batch or capacity > self.max_capacity:
            raise ValueError(f"batch {b} / capacity {capacity} exceed the engines' profile "
                             f"({self.max_batch}, {self.max_capacity})")
        bufs = self._take()
        state = TrtState(bufs, b, capacity)
        weakref.finalize(state, self._give_back, bufs)
        src = bufs.bufs["pixels"]
        host = src.host[:pixels.size].reshape(pixels.shape)
        host[...] = pixels  # converted to the engine's input dtype here, so the copy is sized by it
        with self._lock:
            self._copy(src.device, self._host_ptr(host), host.nbytes, "h2d")
            self._run("encoder", {"pixels": pixels.shape}, bufs)
            slots = self.layers * b * self.heads * capacity * self.head_dim
            for name in ("cache_k", "cache_v"):
                buf = bufs.bufs[name]
                _check(self._cudart.cudaMemsetAsync(buf.device, 0, slots * buf.dtype.itemsize, self._stream))
            heads = next((bufs.bufs[n] for n in self._heads_output if n in bufs.bufs), None)
            if heads is not None:  # (B, values) at the front of the max-batch buffer
                self._copy(self._host_ptr(heads.host), heads.device, heads.nbytes // self.max_batch * b, "d2h")
            _check(self._cudart.cudaStreamSynchronize(self._stream))
        if heads is not None:
            per_row = heads.nbytes // self.max_batch // heads.dtype.itemsize
            state.attributes = heads.host[:b * per_row].reshape(b, per_row).astype(np.float32)
        return state

    def step(self, state: TrtState, tokens: np.ndarray, position: int) -> np.ndarray:
        """One decoder step; this token's K/V land in cache slot ``position``; next ids (B,) int64."""
        if position >= state.capacity:
            raise ValueError(f"position {position} exceeds the cache capacity {state.capacity}")
        b, bufs = state.batch, state.buffers.bufs
        ids_in = {"tokens": bufs["tokens"].host[:b], "positions": bufs["positions"].host[:b]}
        ids_in["tokens"][:] = tokens.reshape(-1)
        ids_in["positions"][:] = position
        cross = (self.layers, b, self.heads, self.n_visual, self.head_dim)
        shapes = {"tokens": (b, 1), "positions": (b, 1), "cross_k": cross, "cross_v": cross,
                  "cache_k": (self.layers, b, self.heads, state.capacity, self.head_dim),
                  "cache_v": (self.layers, b, self.heads, state.capacity, self.head_dim)}
        ids = bufs["next_ids"]
        with self._lock:
            for name, host in ids_in.items():
                self._copy(bufs[name].device, self._host_ptr(host), host.nbytes, "h2d")
            self._run("decoder", shapes, state.buffers)
            row = self.head_dim * bufs["cache_k"].dtype.itemsize  # one head's K or V of one token
            kind = self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
            for new, cache in (("new_k", "cache_k"), ("new_v", "cache_v")):
                # (L, B, H, 1, Dh) rows -> slot ``position`` of (L, B, H, capacity, Dh): one strided copy
                _check(self._cudart.cudaMemcpy2DAsync(bufs[cache].device + position * row, state.capacity * row,
                                                      bufs[new].device, row, row, self.layers * b * self.heads,
                                                      kind, self._stream))
            self._copy(self._host_ptr(ids.host), ids.device, b * ids.dtype.itemsize, "d2h")
            _check(self._cudart.cudaStreamSynchronize(self._stream))
            return ids.host[:b].astype(np.int64)

    def keep(self, state: TrtState, rows: np.ndarray) -> None:
        """Compact cross K/V and the cache to ``rows`` on the device (in place, front to back)."""
        b, keep, bufs = state.batch, [int(r) for r in rows], state.buffers.bufs
        # bytes of one batch row of one layer: (H, N, Dh) cross K/V, (H, capacity, Dh) cache
        per_row = {name: self.heads * slots * self.head_dim * bufs[name].dtype.itemsize
                   for name, slots in (("cross_k", self.n_visual), ("cross_v", self.n_visual),
                                       ("cache_k", state.capacity), ("cache_v", state.capacity))}
        with self._lock:
            for name, size in per_row.items():
                base = bufs[name].device
                for layer in range(self.layers):
                    for i, r in enumerate(keep):
                        src, dst = base + (layer * b + r) * size, base + (layer * len(keep) + i) * size
                        if src != dst:  # dst <= src and chunks are whole rows: never a partial overlap
                            self._copy(dst, src, size, "d2d")
            _check(self._cudart.cudaStreamSynchronize(self._stream))
        state.batch = len(keep)
