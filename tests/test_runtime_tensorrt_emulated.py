"""The TensorRT backend on CPU: an emulated CUDA runtime, ONNX Runtime standing in for the engines (mocks).

``EmulatedCudart`` implements the cuda-python calls the backend makes (malloc, pinned malloc,
memcpy, strided 2-D memcpy, memset, streams) on host memory and refuses any access outside an
allocation, as the GPU would fault. ``EmulatedEngine`` answers the engine queries from the
bundle's manifest and runs the bundle's portable ONNX graph on the tensors at the bound
addresses, in the I/O dtypes an engine declares. So every buffer size, pointer offset, strided
copy and row compaction of ``runtime/backends/tensorrt.py`` runs here; TensorRT's kernels do not.
"""

from __future__ import annotations

import ctypes
import gc
import shutil
import threading
import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")

TRT_VERSION, CC = "10.9.0.34", "9.0"


class EmulatedCudart:
    """cuda-python's ``cudart`` calls on host memory; an access outside an allocation raises."""

    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2, cudaMemcpyDeviceToDevice=3)

    def __init__(self) -> None:
        self.mem: dict[int, np.ndarray] = {}

    def _alloc(self, nbytes: int) -> tuple[int, int]:
        buf = np.full(nbytes, 0xAB, np.uint8)  # not zero: the backend must clear what it reads
        self.mem[buf.ctypes.data] = buf
        return 0, buf.ctypes.data

    cudaMalloc = cudaMallocHost = _alloc

    def _free(self, ptr: int) -> tuple[int]:
        del self.mem[ptr]
        return (0,)

    cudaFree = cudaFreeHost = _free

    def span(self, ptr: int, nbytes: int) -> None:
        """Raise unless [ptr, ptr + nbytes) lies inside one live allocation."""
        for start, buf in self.mem.items():
            if start <= ptr and ptr + nbytes <= start + buf.size:
                return
        raise AssertionError(f"access of {nbytes} bytes at {ptr:#x} outside every allocation")

    def cudaMemcpyAsync(self, dst: int, src: int, nbytes: int, kind: int, stream: int) -> tuple[int]:
        self.span(dst, nbytes)
        self.span(src, nbytes)
        ctypes.memmove(dst, src, nbytes)
        return (0,)

    def cudaMemcpy2DAsync(self, dst: int, dpitch: int, src: int, spitch: int, width: int, height: int,
                          kind: int, stream: int) -> tuple[int]:
        for row in range(height):
            self.cudaMemcpyAsync(dst + row * dpitch, src + row * spitch, width, kind, stream)
        return (0,)

    def cudaMemsetAsync(self, ptr: int, value: int, nbytes: int, stream: int) -> tuple[int]:
        self.span(ptr, nbytes)
        ctypes.memset(ptr, value, nbytes)
        return (0,)

    def cudaStreamCreate(self) -> tuple[int, int]:
        return 0, 7

    def cudaStreamDestroy(self, stream: int) -> tuple[int]:
        return (0,)

    def cudaStreamSynchronize(self, stream: int) -> tuple[int]:
        return (0,)

    def cudaGetDeviceCount(self) -> tuple[int, int]:
        return 0, 1

    def cudaGetDeviceProperties(self, device: int) -> tuple[int, Any]:
        return 0, SimpleNamespace(name=b"Emulated GPU", major=9, minor=0)

    def view(self, ptr: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        self.span(ptr, nbytes)
        return np.frombuffer((ctypes.c_uint8 * nbytes).from_address(ptr), np.uint8).view(dtype).reshape(shape)


class EmulatedEngine:
    """An engine built from one bundle graph: its I/O as TensorRT reports it, the graph run by ONNX Runtime."""

    def __init__(self, bundle: Any, graph: str, cudart: EmulatedCudart, dtypes: dict[str, Any]):
        from export.trt import profile_shapes

        spec = bundle.graph(graph)
        self.session = ort.InferenceSession(str(bundle.path(graph)), providers=["CPUExecutionProvider"])
        self.onnx_dtypes = {name: np.dtype(t.dtype) for name, t in {**spec.inputs, **spec.outputs}.items()}
        self.dtypes = {name: np.dtype(dtypes.get(name, d)) for name, d in self.onnx_dtypes.items()}
        self.inputs, self.outputs = list(spec.inputs), list(spec.outputs)
        self.shapes = {name: tuple(-1 if isinstance(d, str) else d for d in t.shape) for name, t in spec.outputs.items()}
        self.profiles = profile_shapes(bundle, graph)
        self.cudart = cudart
        self.on_execute: Any = None

    num_io_tensors = property(lambda self: len(self.inputs) + len(self.outputs))

    def get_tensor_name(self, i: int) -> str:
        return (self.inputs + self.outputs)[i]

    def get_tensor_dtype(self, name: str) -> np.dtype:
        return self.dtypes[name]

    def get_tensor_mode(self, name: str) -> str:
        return "input" if name in self.inputs else "output"

    def get_tensor_profile_shape(self, name: str, profile: int) -> tuple[tuple[int, ...], ...]:
        return self.profiles[name]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.shapes[name]

    def create_execution_context(self) -> EmulatedContext:
        return EmulatedContext(self)

    def compute(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The graph on host arrays in the engine's dtypes (ONNX Runtime in the graph's own)."""
        onnx_feeds = {k: v.astype(self.onnx_dtypes[k]) for k, v in feeds.items()}
        outs = self.session.run(self.outputs, onnx_feeds)
        return {k: v.astype(self.dtypes[k]) for k, v in zip(self.outputs, outs)}


class EmulatedContext:
    """``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3`` over the emulated memory."""

    def __init__(self, engine: EmulatedEngine):
        self.engine, self.shapes, self.addresses = engine, {}, {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = int(ptr)
        return True

    def execute_async_v3(self, stream: int) -> bool:
        e, mem = self.engine, self.engine.cudart
        feeds = {n: mem.view(self.addresses[n], e.dtypes[n], self.shapes[n]).copy() for n in e.inputs}
        for name, value in e.compute(feeds).items():
            mem.view(self.addresses[name], value.dtype, value.shape)[...] = value
        if e.on_execute:
            e.on_execute()
        return True


def emulated_imports(bundle_root: Path, dtypes: dict[str, Any] | None = None) -> tuple[Any, EmulatedCudart, dict]:
    """``runtime.backends.tensorrt._imports`` stand-in: (trt, cudart) whose runtime deserializes emulated engines."""
    from runtime.bundle import Bundle

    cudart, engines = EmulatedCudart(), {}

    def deserialize(data: bytes) -> EmulatedEngine:
        graph = data.decode().removeprefix("plan for ")
        engines[graph] = EmulatedEngine(Bundle.load(bundle_root), graph, cudart, dtypes or {})
        return engines[graph]

    class Logger:
        WARNING = 2

        def __init__(self, level: int):
            self.level = level

    trt = SimpleNamespace(__version__=TRT_VERSION, nptype=lambda d: d, TensorIOMode=SimpleNamespace(INPUT="input"),
                          Logger=Logger, Runtime=lambda logger: SimpleNamespace(deserialize_cuda_engine=deserialize))
    return trt, cudart, engines


@pytest.fixture()
def engine_bundle(tiny_bundle, tmp_path, monkeypatch) -> Path:
    """The tiny bundle with stand-in FP32 engine files recorded for TensorRT 10.9.0.34 on sm 9.0."""
    import export.trt as t
    from runtime.bundle import sha256_path
    from runtime.engines import Engine

    dst = tmp_path / "b"
    shutil.copytree(tiny_bundle, dst)

    def fake_build(bundle, graph, precision, target, *args, **kwargs):
        tmp = t._tmp(bundle.root / f"{graph}.{precision}.plan")
        tmp.write_bytes(f"plan for {graph}".encode())
        return Engine("tensorrt-plan", graph, f"{graph}.{precision}.plan", precision, sha256_path(tmp),
                      tmp.stat().st_size, target.to_dict(), {}, {})

    monkeypatch.setattr(t, "trt_target", lambda: t.GpuTarget(TRT_VERSION, "Emulated GPU", CC))
    monkeypatch.setattr(t, "_build_one", fake_build)
    t.build_engines(dst, fp16=False, progress=False)
    return dst


def _backend(bundle_root: Path, monkeypatch, dtypes: dict[str, Any] | None = None) -> tuple[Any, EmulatedCudart, dict]:
    import runtime.backends.tensorrt as rt
    from runtime.bundle import Bundle

    trt, cudart, engines = emulated_imports(bundle_root, dtypes)
    monkeypatch.setattr(rt, "_imports", lambda: (trt, cudart))
    return rt.TensorRTBackend(Bundle.load(bundle_root)), cudart, engines


def _pixels(bundle_root: Path, batch: int, seed: int, dtype: Any = np.float32) -> np.ndarray:
    from runtime.bundle import Bundle

    pre = Bundle.load(bundle_root).preprocess
    return np.random.default_rng(seed).standard_normal((batch, 3, pre["height"], pre["width"])).astype(dtype)


def test_emulated_tensorrt_describes_like_onnxruntime(engine_bundle, monkeypatch):
    """Describer(backend="tensorrt") on the emulation gives ONNX Runtime's ids, batch after batch (buffers pooled)."""
    import runtime.backends.tensorrt as rt
    from runtime import Describer

    trt, cudart, _ = emulated_imports(engine_bundle)
    monkeypatch.setattr(rt, "_imports", lambda: (trt, cudart))
    emulated = Describer(engine_bundle, backend="tensorrt")
    reference = Describer(engine_bundle, backend="onnxruntime-cpu", decoder="portable")
    assert emulated.backend_name == "tensorrt"
    for batch, seed in ((5, 1), (8, 2), (1, 3)):
        pixels = _pixels(engine_bundle, batch, seed)
        ours, _ = emulated.generate_ids(pixels, 12, stop_at_eos=False)
        ref, _ = reference.generate_ids(pixels, 12, stop_at_eos=False)
        assert ours == ref
    assert len(emulated.backend._pool) == 1  # one buffer set, reused by every batch
    emulated.close()
    assert not emulated.backend._pool


NARROW = {"tokens": np.int32, "positions": np.int32, "next_ids": np.int32, "cross_k": np.float16,
          "cross_v": np.float16, "cache_k": np.float16, "cache_v": np.float16, "new_k": np.float16,
          "new_v": np.float16}


@pytest.mark.parametrize("dtypes", [{}, NARROW], ids=["onnx-dtypes", "int32-ids-fp16-kv"])
def test_emulated_steps_and_keep_follow_the_engine_dtypes(engine_bundle, monkeypatch, dtypes):
    """At the largest batch and cache, float64 pixels in: every copy and clear sized by the engine's dtypes,
    each step's K/V in its cache slot, kept rows compacted; ids as a host loop over the same engines gives."""
    backend, cudart, engines = _backend(engine_bundle, monkeypatch, dtypes)
    batch, capacity, steps = backend.max_batch, backend.max_capacity, 6
    pixels = _pixels(engine_bundle, batch, seed=4, dtype=np.float64)
    state = backend.encode(pixels, capacity)
    enc, dec = engines["encoder"], engines["decoder"]
    ck, cv = (enc.compute({"pixels": pixels.astype(np.float32)})[k] for k in ("cross_k", "cross_v"))
    layers, heads, dh = backend.layers, backend.heads, backend.head_dim
    cache = {k: np.zeros((layers, batch, heads, capacity, dh), dec.dtypes[k]) for k in ("cache_k", "cache_v")}
    tokens = np.full((batch, 1), 1, np.int64)
    keep_at, rows = 3, np.array([0, 2, 5, 7])
    for t in range(steps):
        if t == keep_at:
            backend.keep(state, rows)
            ck, cv = ck[:, rows], cv[:, rows]
            cache = {k: v[:, rows] for k, v in cache.items()}
            tokens = tokens[rows]
        ids = backend.step(state, tokens, t)
        out = dec.compute({"tokens": tokens, "positions": np.full_like(tokens, t), "cross_k": ck, "cross_v": cv,
                           **cache})
        cache["cache_k"][:, :, :, t], cache["cache_v"][:, :, :, t] = out["new_k"][:, :, :, 0], out["new_v"][:, :, :, 0]
        assert ids.dtype == np.int64 and ids.tolist() == out["next_ids"].astype(np.int64).tolist(), t
        tokens = ids[:, None]
    device_cache = cudart.view(state.buffers.bufs["cache_k"].device, dec.dtypes["cache_k"],
                               (layers, len(rows), heads, capacity, dh))
    np.testing.assert_array_equal(device_cache, cache["cache_k"])  # every slot, the cleared ones included


def test_finalizer_inside_a_locked_step_does_not_deadlock(engine_bundle, monkeypatch):
    """A batch state dropped while another batch's step holds the execution lock (as the garbage collector
    may do at any allocation): its buffers go back to the pool from inside the step, without a deadlock."""
    backend, _, engines = _backend(engine_bundle, monkeypatch)
    first = backend.encode(_pixels(engine_bundle, 2, seed=5), 4)
    held = [backend.encode(_pixels(engine_bundle, 2, seed=6), 4)]
    assert len(backend._pool) == 0
    engines["decoder"].on_execute = held.clear  # runs with the lock held; the dropped state's finalizer runs at once
    done = threading.Event()

    def step() -> None:
        backend.step(first, np.ones((2, 1), np.int64), 0)
        done.set()

    worker = threading.Thread(target=step, daemon=True)
    worker.start()
    worker.join(timeout=30)
    if not done.is_set():
        for f in [o for o in gc.get_objects() if isinstance(o, weakref.finalize)]:
            if getattr((f.peek() or (None, None))[1], "__self__", None) is backend:
                f.detach()  # the lock stays held: a later finalizer would hang the rest of the run
        pytest.fail("step deadlocked: the dropped state's finalizer waited for the lock its own thread held")
    assert len(backend._pool) == 1  # the dropped batch's buffers, pooled
    engines["decoder"].on_execute = None
    backend.close()
    del first
    assert not backend._pool  # a batch ending after close frees its buffers at once


def test_keep_and_step_refuse_a_closed_backend(engine_bundle, monkeypatch):
    from runtime.backends import BackendClosed

    backend, cudart, _ = _backend(engine_bundle, monkeypatch)
    state = backend.encode(_pixels(engine_bundle, 1, seed=7), 4)
    live = len(cudart.mem)
    backend.close()
    with pytest.raises(BackendClosed):
        backend.step(state, np.ones((1, 1), np.int64), 0)
    del state
    assert len(cudart.mem) < live  # the batch's device and pinned buffers freed when its state went
