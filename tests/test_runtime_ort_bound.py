"""runtime/backends/ort_bound.py: the step's ids reach the session on every step, as on a device.

ONNX Runtime copies a bound input to the device of the node that reads it when it is bound; on CPU
it shares the host memory instead, so rewriting a once-bound host array in place works on CPU only.
``CopyAtBind`` wraps the real IO binding (a mock of that one behaviour) and copies the step's host
inputs at bind time, as the CUDA provider does; everything else runs on ONNX Runtime CPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")

HOST_INPUTS = ("tokens", "positions")  # host memory on a CUDA machine; the cache and tables live on the device


class CopyAtBind:
    """An IOBinding that snapshots the step's host inputs when they are bound (ONNX Runtime on a device)."""

    def __init__(self, io: Any, log: list[tuple[str, list[int]]]):
        self.io, self.log = io, log

    def bind_cpu_input(self, name: str, arr: np.ndarray) -> None:
        if name in HOST_INPUTS:
            self.log.append((name, np.asarray(arr).reshape(-1).tolist()))
            arr = np.array(arr, copy=True)
        self.io.bind_cpu_input(name, arr)

    def bind_ortvalue_input(self, name: str, value: Any) -> None:
        if name in HOST_INPUTS:
            snapshot = value.numpy().copy()
            self.log.append((name, snapshot.reshape(-1).tolist()))
            value = ort.OrtValue.ortvalue_from_numpy(snapshot)
        self.io.bind_ortvalue_input(name, value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.io, name)


class CopyingSession:
    """The decoder_ort session, handing out :class:`CopyAtBind` bindings."""

    def __init__(self, session: Any):
        self.session, self.log = session, []

    def io_binding(self) -> CopyAtBind:
        return CopyAtBind(self.session.io_binding(), self.log)

    def run_with_iobinding(self, io: CopyAtBind, *args: Any) -> Any:
        return self.session.run_with_iobinding(io.io, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


def _pixels(bundle, batch: int, seed: int) -> np.ndarray:
    from runtime.bundle import Bundle

    pre = Bundle.load(bundle).preprocess
    return np.random.default_rng(seed).standard_normal((batch, 3, pre["height"], pre["width"])).astype(np.float32)


def test_each_step_binds_its_own_ids_when_binding_copies(tiny_bundle):
    """With copy-at-bind semantics (mock), decoder_ort gives the portable decoder's ids, and every step
    bound that step's tokens and position."""
    from runtime import Describer

    bound = Describer(tiny_bundle)
    assert bound.backend.decoder_graph == "decoder_ort"
    copying = CopyingSession(bound.backend.bound.session)
    bound.backend.bound.session = copying
    pixels = _pixels(tiny_bundle, 3, seed=1)
    ours, _ = bound.generate_ids(pixels, 10, stop_at_eos=False)
    ref, _ = Describer(tiny_bundle, decoder="portable").generate_ids(pixels, 10, stop_at_eos=False)
    assert ours == ref
    positions = [values for name, values in copying.log if name == "positions"]
    tokens = [values for name, values in copying.log if name == "tokens"]
    assert positions == [[t] * 3 for t in range(10)]
    assert tokens[0] == [Describer(tiny_bundle).bundle.special["bos"]] * 3
    assert tokens[1:] == [[row[t] for row in ours] for t in range(9)]


def test_verified_devices_and_cuda_kernel_notes():
    from runtime.backends.ort_bound import bound_cache_verified, cuda_kernel_notes

    assert bound_cache_verified("cpu") and not bound_cache_verified("cuda")
    assert cuda_kernel_notes(64) == cuda_kernel_notes(48) and "every step" in cuda_kernel_notes(64)[0]  # FP32
    assert len(cuda_kernel_notes(32, fp16=True)) == 1 and "step 0" in cuda_kernel_notes(32, fp16=True)[0]
    assert any("head size 48" in n for n in cuda_kernel_notes(48, fp16=True))  # lite0: d_model 192, 4 heads
