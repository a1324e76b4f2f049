"""Beam search and seeded sampling: runtime (both ONNX Runtime decoders) against the PyTorch references."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from runtime.decoding import DecodingOptions  # noqa: E402

MAX_NEW = 12
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pixels(tiny_model) -> np.ndarray:
    h, w = tiny_model.cfg.image_size
    return np.random.default_rng(3).standard_normal((3, 3, h, w)).astype(np.float32)


@pytest.fixture(scope="module", params=["portable", "ort"])
def describer(request, tiny_bundle):
    from runtime import Describer

    with Describer(tiny_bundle, decoder=request.param, threads=1) as d:
        yield d


def _assert_same(runtime_hyps, reference) -> None:
    for hyps, ref in zip(runtime_hyps, reference, strict=True):
        assert [h.tokens for h in hyps] == [r[0] for r in ref]
        np.testing.assert_allclose([h.score for h in hyps], [r[1] for r in ref], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("beams", [2, 3, 5])
def test_beam_search_matches_reference(describer, tiny_model, pixels, beams):
    from pvlm.decoding import beam_search

    opts = DecodingOptions(beams=beams, n_best=beams, no_repeat_ngram_size=3)
    hyps, timings = describer.generate(pixels, opts, MAX_NEW)
    ref = beam_search(tiny_model, torch.from_numpy(pixels), beams, MAX_NEW, n_best=beams, no_repeat_ngram_size=3)
    _assert_same(hyps, ref)
    assert timings["reorder_ms"] >= 0 and all(len(h) == beams for h in hyps)


def test_one_beam_equals_greedy(describer, pixels):
    from runtime.beam import beam_search

    greedy, _ = describer.generate_ids(pixels, MAX_NEW)
    one, _ = beam_search(describer.backend, pixels, describer._bos, describer._eos, MAX_NEW,
                         DecodingOptions(no_repeat_ngram_size=0))
    assert [h[0].tokens for h in one] == greedy


@pytest.mark.parametrize("kw", [{}, {"temperature": 0.7, "top_k": 20, "top_p": 0.9}, {"temperature": 3.0}])
def test_sampling_matches_reference_and_not_batching(describer, tiny_model, pixels, kw):
    from pvlm.decoding import sample

    opts = DecodingOptions(sample=True, n_best=2, seed=11, **kw)
    hyps, _ = describer.generate(pixels, opts, MAX_NEW)
    ref = sample(tiny_model, torch.from_numpy(pixels), MAX_NEW, n=2, seed=11,
                 no_repeat_ngram_size=opts.no_repeat_ngram_size, **kw)
    _assert_same(hyps, ref)
    alone, _ = describer.generate(pixels[2:], opts, MAX_NEW, image_index=[2])
    assert [h.tokens for h in alone[0]] == [h.tokens for h in hyps[2]]
    again, _ = describer.generate(pixels, opts, MAX_NEW)
    assert [[h.tokens for h in x] for x in again] == [[h.tokens for h in x] for x in hyps]


def test_reorder_matches_keep(describer, pixels):
    """A beam reorder in place (rows of one image) leaves the same cache as compacting through ``keep``."""
    be, rows, one_image = describer.backend, np.array([2, 0, 0]), pixels[[0, 0, 0]]
    a, b = be.encode(one_image, 6), be.encode(one_image, 6)
    tokens = np.array([[1], [5], [9]], np.int64)
    for s in (a, b):
        be.step_logits(s, tokens, 0)
    be.reorder(a, rows, 1)
    be.keep(b, rows)
    assert np.array_equal(be.step_logits(a, tokens, 1), be.step_logits(b, tokens, 1))


@pytest.mark.parametrize("kw, msg", [
    ({"beams": 0}, "beams must be an integer >= 1"),
    ({"sample": True, "top_p": 1.5}, "top_p must be in (0, 1]"),
    ({"sample": True, "temperature": -1.0}, "temperature must be > 0"),
    ({"beams": 2, "n_best": 3}, "n_best (3) cannot exceed beams (2)"),
    ({"beams": 2, "sample": True}, "sampling and beam search do not combine"),
])
def test_bad_options_one_clear_error(kw, msg):
    with pytest.raises(ValueError) as e:
        DecodingOptions(**kw)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_parse_labels():
    assert DecodingOptions.parse("beams3").beams == 3 and DecodingOptions.parse("sample").sample
    assert DecodingOptions.parse("greedy") == DecodingOptions()
    original = DecodingOptions.parse("original")
    assert (original.sample, original.temperature, original.top_k, original.top_p) == (True, 0.7, 50, 0.9)
    assert original.label == "original" and original.with_(top_k=40).label == "sample"
    assert DecodingOptions.parse("beams3").label == "beams3"
    with pytest.raises(ValueError, match="greedy, sample, original or beamsN"):
        DecodingOptions.parse("beam")
