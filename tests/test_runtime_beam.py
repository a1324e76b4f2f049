"""Beam search's host side: the shortcut ranking equals the full sort, and finished images leave the batch in
groups without changing any result."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.beam import _ranked, _ranked_full


def _case(rng: np.random.Generator, groups: int, k: int, vocab: int, ties: bool, guard: bool, first: bool):
    logits = rng.standard_normal((groups * k, vocab)).astype(np.float32) * 3
    if ties:  # few distinct values: ties inside rows and across beams
        logits = np.round(logits).astype(np.float32)
    lp = rng.standard_normal((groups, k)) * 2 - 5
    if first:  # step 0: only beam 0 may start
        lp[:, 1:] = -np.inf
    banned = None
    if guard:
        banned = [sorted(set(rng.integers(0, vocab, int(rng.integers(0, 6))).tolist())) for _ in range(groups * k)]
    return logits, lp, banned


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("guard", [False, True])
@pytest.mark.parametrize("first", [False, True])
def test_shortcut_ranking_equals_full_sort(ties, guard, first, monkeypatch):
    monkeypatch.setattr("runtime.beam.SMALL_STEP", 0)  # the shortcut for every size
    rng = np.random.default_rng([ties, guard, first])
    for trial in range(60):
        k = int(rng.integers(1, 6))
        vocab = int(rng.choice([5, 2 * k + 1, 2 * k + 2, 40, 300]))
        logits, lp, banned = _case(rng, int(rng.integers(1, 7)), k, vocab, ties, guard, first)
        want_idx, want_val = _ranked_full(logits, lp, banned, k)
        got_idx, got_val = _ranked(logits, lp, banned, k)
        assert np.array_equal(got_idx, want_idx), trial
        assert np.array_equal(got_val, want_val), trial  # bit-identical scores, -inf included


def test_banned_tokens_never_ranked_above_allowed_ones():
    logits = np.zeros((2, 10), np.float32)
    logits[:, 3] = 5.0  # the best token of both beams is banned for beam 0
    idx, val = _ranked(logits, np.array([[0.0, -1.0]]), [[3], []], 2)
    assert idx[0, 0] == 10 + 3 and 3 not in idx[0].tolist()
    assert np.isfinite(val).all()


def test_shortcut_taken_without_ties(monkeypatch):
    """Distinct logits never need the full sort (the shortcut is what runs in practice)."""
    from runtime import beam

    rng = np.random.default_rng(5)
    logits, lp, banned = _case(rng, 32, 3, 512, ties=False, guard=True, first=True)
    want = _ranked_full(logits, lp, banned, 3)
    monkeypatch.setattr(beam, "_ranked_full", lambda *a: pytest.fail("full sort used"))
    got = _ranked(logits, lp, banned, 3)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


@pytest.fixture(scope="module")
def lively(tiny_checkpoint, tmp_path_factory):
    """A bundle whose rows finish at different steps, and its checkpoint (test_export_triton's builder)."""
    pytest.importorskip("torch")
    from test_export_triton import build_lively_bundle

    bundle = build_lively_bundle(tiny_checkpoint, tmp_path_factory.getbasetemp() / "lively-bundle" / "bundle")
    return bundle, bundle.parent / "lively.pt"


@pytest.mark.parametrize("decoder", ["portable", "ort"])
def test_finished_images_leave_in_groups_same_results(lively, decoder, monkeypatch):
    """Dropping finished images at once, in groups, or never gives the PyTorch reference's beams."""
    import io

    import torch
    from PIL import Image
    from test_export_triton import make_images

    import pvlm
    from pvlm.decoding import beam_search as reference
    from runtime import Describer, beam
    from runtime.decoding import DecodingOptions

    bundle, ckpt = lively
    opts = DecodingOptions(beams=2, n_best=2)
    with Describer(bundle, decoder=decoder, threads=1) as d:
        pixels = np.stack([d.preprocess(Image.open(io.BytesIO(b))) for b in make_images(8, seed=1)])
        results, kept = {}, []
        real_keep = d.backend.keep
        monkeypatch.setattr(d.backend, "keep", lambda s, rows: (kept.append(len(rows)), real_keep(s, rows)))
        for share in (0.0, 0.5, 2.0):
            monkeypatch.setattr(beam, "COMPACT_SHARE", share)
            kept.clear()
            hyps, _ = d.generate(pixels, opts, 24)
            results[share] = ([[h.tokens for h in x] for x in hyps], [[h.score for h in x] for x in hyps], list(kept))
    model, _, _ = pvlm.load_checkpoint(ckpt)
    with torch.no_grad():
        ref = reference(model.eval(), torch.from_numpy(pixels), 2, 24, n_best=2)
    assert results[0.0][0] == [[t for t, _ in r] for r in ref]
    np.testing.assert_allclose(results[0.0][1], [[s for _, s in r] for r in ref], rtol=1e-5, atol=1e-5)
    for share in (0.5, 2.0):
        assert results[share][:2] == results[0.0][:2], share
    lengths = {len(t) for x in results[0.0][0] for t in x}
    assert len(lengths) > 2, "images should finish at different steps"
    # the first keep expands 8 images to 16 rows; later ones drop finished images (never, with a share of 2)
    assert len(results[0.0][2]) > 1 and len(results[2.0][2]) == 1
