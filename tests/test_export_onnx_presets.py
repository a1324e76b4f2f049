"""Completeness: every preset exports to a verified bundle (seed-7m via an original-repository
checkpoint in test_pvlm_checkpoint.py, tiny via the shared fixture)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from export import export_onnx  # noqa: E402
from pvlm import PRESETS, PersonVLM, PersonVLMConfig, Vocabulary, save_checkpoint  # noqa: E402
from pvlm.vocab import SPECIALS  # noqa: E402

COVERED_ELSEWHERE = {"seed-7m", "tiny"}


def test_every_preset_is_covered():
    assert set(PRESETS) - COVERED_ELSEWHERE == {"spatial", "small", "lite0"}


@pytest.mark.parametrize("preset", sorted(set(PRESETS) - COVERED_ELSEWHERE))
def test_preset_exports_and_validates(preset, tmp_path):
    torch.manual_seed(0)
    # random backbone weights: export parity does not depend on them, and the test needs no weights package
    cfg = PersonVLMConfig.preset(preset, vocab_size=64, pretrained_backbone=False)
    vocab = Vocabulary(list(SPECIALS) + [f"w{i}" for i in range(60)])
    ckpt = save_checkpoint(tmp_path / "m.pt", PersonVLM(cfg).eval(), vocab)
    bundle = export_onnx(ckpt, tmp_path / "b", max_batch=16, max_new_tokens=8)
    m = json.loads((bundle / "manifest.json").read_text())
    p = m["verification"]["parity"]
    assert p["sequences_identical"] == p["images"] >= 32 and p["logits_max_abs_diff"] < 1e-4
    h, w = cfg.image_size
    assert m["graphs"]["encoder"]["inputs"]["pixels"]["shape"] == ["batch", 3, h, w]
    assert m["graphs"]["encoder"]["outputs"]["cross_k"]["shape"][3] == cfg.n_visual
    assert (m["preprocess"]["height"], m["preprocess"]["width"]) == (h, w)
