"""``SessionLoader(memory=...)``: the lean default runs the encoder in equal chunks of a pixel budget and gives
the same tokens as one encoder call per batch (``fast``)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from runtime.backends import ort as ort_module
from runtime.backends.ort import encoder_chunks, ort_backend
from runtime.bundle import Bundle


@pytest.mark.parametrize("batch, size, budget, sizes", [
    (32, (224, 224), 8 * 224 * 224, [8, 8, 8, 8]),  # seed-7m at the default budget
    (32, (192, 96), 8 * 224 * 224, [16, 16]),  # lite0: 21 images fit
    (20, (10, 10), 16 * 100, [10, 10]), (5, (10, 10), 3 * 100, [3, 2]), (7, (10, 10), 50, [1] * 7),
    (9, (10, 10), None, [9]), (1, (10, 10), 100, [1]),
])
def test_encoder_chunks_are_equal_and_within_the_budget(batch, size, budget, sizes):
    chunks = encoder_chunks(batch, *size, budget)
    assert [s.stop - s.start for s in chunks] == sizes
    assert chunks[0].start == 0 and chunks[-1].stop == batch
    assert all(a.stop == b.start for a, b in itertools.pairwise(chunks))


def test_unknown_memory_mode_is_refused(tiny_bundle):
    with pytest.raises(ValueError, match="memory must be one of lean, fast"):
        ort_backend(Bundle.load(tiny_bundle), memory="small")


@pytest.mark.parametrize("decoder", ["ort", "portable"])
def test_lean_chunks_the_encoder_and_gives_fasts_tokens(tiny_bundle, monkeypatch, decoder):
    from runtime import Describer

    bundle = Bundle.load(tiny_bundle)
    pre = bundle.preprocessing
    monkeypatch.setattr(ort_module, "ENCODER_CHUNK_PIXELS", 3 * pre.height * pre.width)  # 3 images per call
    lean = ort_backend(bundle, decoder=decoder)
    fast = ort_backend(bundle, decoder=decoder, memory="fast")
    assert (lean.memory, fast.memory) == ("lean", "fast")
    calls: list[int] = []
    run = lean.encoder.run
    lean.encoder.run = lambda names, feeds, *a: calls.append(len(feeds["pixels"])) or run(names, feeds, *a)
    pixels = np.random.default_rng(0).standard_normal((8, 3, pre.height, pre.width)).astype(np.float32)
    got, _ = Describer(bundle, backend=lean).generate_ids(pixels, 10, stop_at_eos=False)
    want, _ = Describer(bundle, backend=fast).generate_ids(pixels, 10, stop_at_eos=False)
    assert calls == [3, 3, 2] and got == want


def test_only_lean_on_cpu_chunks_the_encoder(tiny_bundle):
    from runtime.backends.ort import ENCODER_CHUNK_PIXELS, SessionLoader

    bundle = Bundle.load(tiny_bundle)
    assert SessionLoader(bundle).encoder_pixels == ENCODER_CHUNK_PIXELS
    assert SessionLoader(bundle, memory="fast").encoder_pixels is None
