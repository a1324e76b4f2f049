"""pvlm.model: presets, config validation and serialisation, freezing, shapes, cached vs full decoding."""

from __future__ import annotations

import dataclasses
import json

import pytest

torch = pytest.importorskip("torch")

from pvlm import PRESETS, PersonVLM, PersonVLMConfig, count_parameters  # noqa: E402
from pvlm.model import _backbone_units, lm_loss  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def spatial_model():
    torch.manual_seed(0)
    return PersonVLM(PersonVLMConfig.preset("spatial")).eval()


def _visual(model, batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h, w = model.cfg.image_size
    return model.cross_kv(model.encode_image(torch.randn(batch, 3, h, w, generator=g)))


# --------------------------------------------------------------------------- presets and parameter counts


def test_seed_7m_has_exactly_the_original_parameter_count() -> None:
    """The only test that builds seed-7m at full vocabulary; no forward pass."""
    cfg = PersonVLMConfig.preset("seed-7m")
    assert cfg.vocab_size == 3179
    model = PersonVLM(cfg)
    assert count_parameters(model) == 7_259_184
    assert model.param_counts()["all"]["total"] == 7_259_184
    assert cfg.n_visual == 8 and cfg.visual_tokens == "pooled"


def test_presets_construct_and_tiny_is_under_1m(spatial_model, tiny_model) -> None:
    assert set(PRESETS) == {"seed-7m", "spatial", "small", "lite0", "tiny"}
    small = PersonVLM(PersonVLMConfig.preset("small"))
    counts = {
        "spatial": count_parameters(spatial_model),
        "small": count_parameters(small),
        "tiny": count_parameters(PersonVLM(PersonVLMConfig.preset("tiny"))),
    }
    assert counts["tiny"] < 1_000_000
    assert counts["tiny"] < counts["small"] < counts["spatial"]
    assert spatial_model.cfg.image_size == (256, 128)
    assert small.cfg.d_model == 192 and small.cfg.n_layers == 3


def test_head_is_tied_and_counted_once(tiny_model) -> None:
    assert tiny_model.head.weight is tiny_model.tok_emb.weight
    assert count_parameters(tiny_model) == tiny_model.param_counts()["all"]["total"]


def test_preset_overrides_apply() -> None:
    cfg = PersonVLMConfig.preset("tiny", vocab_size=77, image_size=(96, 64))
    assert cfg.vocab_size == 77 and cfg.image_size == (96, 64)
    assert cfg.grid == (3, 2) and cfg.n_visual == 6


# --------------------------------------------------------------------------- config


def test_config_is_frozen() -> None:
    cfg = PersonVLMConfig.preset("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.d_model = 128  # type: ignore[misc]


def test_config_dict_round_trip_through_json() -> None:
    cfg = PersonVLMConfig.preset("spatial", vocab_size=123, freeze_ratio=0.25)
    d = cfg.to_dict()
    assert d["image_size"] == [256, 128] and isinstance(d["mean"], list) and isinstance(d["std"], list)
    back = PersonVLMConfig.from_dict(json.loads(json.dumps(d)))
    assert back == cfg
    assert back.image_size == (256, 128) and isinstance(back.image_size, tuple)
    assert isinstance(back.mean, tuple) and isinstance(back.std, tuple)
    assert back.replace(d_model=128).d_model == 128 and back.d_model == 256


def test_from_dict_rejects_unknown_keys() -> None:
    d = PersonVLMConfig.preset("tiny").to_dict()
    d["bogus"] = 1
    with pytest.raises(ValueError, match="bogus"):
        PersonVLMConfig.from_dict(d)


@pytest.mark.parametrize(
    "make",
    [
        lambda: PersonVLMConfig.preset("nonexistent"),
        lambda: PersonVLMConfig.preset("tiny", image_size=(64, 48)),
        lambda: PersonVLMConfig.preset("tiny", image_size=(100, 32)),
        lambda: PersonVLMConfig.preset("tiny", image_size=(0, 32)),
        lambda: PersonVLMConfig.preset("tiny", d_model=65),
        lambda: PersonVLMConfig.preset("seed-7m", n_heads=3),
        lambda: PersonVLMConfig.preset("tiny", visual_tokens="grid"),
        lambda: PersonVLMConfig.preset("tiny", freeze_ratio=1.5),
    ],
    ids=["unknown-preset", "width-48", "height-100", "height-0", "dmodel-65", "heads-3", "visual-tokens", "freeze"],
)
def test_invalid_configs_raise_value_error(make) -> None:
    with pytest.raises(ValueError):
        make()


# --------------------------------------------------------------------------- freezing


def test_freeze_backbone_half() -> None:
    torch.manual_seed(0)
    model = PersonVLM(PersonVLMConfig.preset("tiny"))
    params = list(model.vision.backbone.parameters())
    assert all(p.requires_grad for p in params)
    frozen_elems = model.freeze_backbone(0.5)
    frozen = [p for p in params if not p.requires_grad]
    assert 0 < len(frozen) <= len(params) // 2
    assert frozen == params[: len(frozen)]  # the first tensors, in order
    for block in _backbone_units(model.vision.backbone):  # whole blocks: all frozen or none
        assert len({p.requires_grad for p in block.parameters()}) == 1
    assert frozen_elems == sum(p.numel() for p in frozen) > 0
    counts = model.param_counts()
    assert counts["backbone"]["trainable"] == counts["backbone"]["total"] - frozen_elems
    assert counts["all"]["trainable"] < counts["all"]["total"]
    assert counts["decoder"]["trainable"] == counts["decoder"]["total"]  # only the backbone is frozen
    model.freeze_backbone(0.0)
    assert all(p.requires_grad for p in params)


def test_frozen_batch_norms_keep_running_stats_in_train_mode() -> None:
    torch.manual_seed(0)
    model = PersonVLM(PersonVLMConfig.preset("tiny", freeze_ratio=0.5)).train()
    bns = [m for m in model.vision.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    frozen = [m for m in bns if not m.weight.requires_grad]
    trained = [m for m in bns if m.weight.requires_grad]
    assert frozen and trained
    assert not any(m.training for m in frozen) and all(m.training for m in trained)
    before = [m.running_mean.clone() for m in bns]
    h, w = model.cfg.image_size
    model(torch.randn(4, 3, h, w) * 3 + 1, torch.randint(4, 50, (4, 6)))
    changed = [not torch.equal(b, m.running_mean) for b, m in zip(before, bns)]
    assert changed == [m in trained for m in bns]  # only the trainable ones updated their statistics
    model.eval().train()  # a mode round trip keeps frozen ones in eval
    assert not any(m.training for m in frozen)


def test_freeze_ratio_in_config_applies_at_construction() -> None:
    model = PersonVLM(PersonVLMConfig.preset("tiny", freeze_ratio=1.0))
    counts = model.param_counts()
    assert counts["backbone"]["trainable"] == 0 < counts["backbone"]["total"]
    assert counts["all"]["trainable"] == counts["all"]["total"] - counts["backbone"]["total"]


# --------------------------------------------------------------------------- shapes


@torch.no_grad()
def test_spatial_non_square_input_gives_32_visual_tokens(spatial_model) -> None:
    cfg = spatial_model.cfg
    assert cfg.n_visual == 32
    visual = spatial_model.encode_image(torch.randn(1, 3, 256, 128, generator=torch.Generator().manual_seed(0)))
    assert visual.shape == (1, 32, 256)
    ck, cv = spatial_model.cross_kv(visual)
    assert ck.shape == cv.shape == (cfg.n_layers, 1, cfg.n_heads, 32, cfg.head_dim) == (4, 1, 4, 32, 64)


@torch.no_grad()
def test_tiny_non_square_input_gives_2_visual_tokens(tiny_model) -> None:
    cfg = tiny_model.cfg
    assert cfg.image_size == (64, 32) and cfg.n_visual == 2
    ck, cv = _visual(tiny_model, 3)
    assert ck.shape == cv.shape == (cfg.n_layers, 3, cfg.n_heads, 2, cfg.head_dim) == (2, 3, 2, 2, 32)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, cfg.vocab_size, (3, 5), generator=g)
    logits = tiny_model(torch.randn(3, 3, 64, 32, generator=g), ids)
    assert logits.shape == (3, 5, cfg.vocab_size)
    assert torch.isfinite(logits).all()


@torch.no_grad()
def test_decode_full_rejects_sequences_longer_than_max_len(tiny_model) -> None:
    ck, cv = _visual(tiny_model, 1)
    ids = torch.ones(1, tiny_model.cfg.max_len + 1, dtype=torch.long)
    with pytest.raises(ValueError, match="max_len"):
        tiny_model.decode_full(ids, ck, cv)


def test_lm_loss_ignores_padding() -> None:
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 10)
    ids = torch.tensor([[1, 5, 2, 0]])
    full = lm_loss(logits, ids, pad_id=0)
    manual = torch.nn.functional.cross_entropy(logits[0, :2], ids[0, 1:3])
    assert torch.allclose(full, manual)


# --------------------------------------------------------------------------- decode_step vs decode_full


def _step_all(model, ids, ck, cv, capacity: int, garbage: bool, seed: int = 0):
    """Decode ``ids`` one token at a time through the preallocated cache; returns (B, T, V) logits."""
    b, t = ids.shape
    cache_k, cache_v = model.empty_cache(b, capacity)
    if garbage:
        g = torch.Generator().manual_seed(seed)
        cache_k.copy_(torch.randn(cache_k.shape, generator=g) * 10)
        cache_v.copy_(torch.randn(cache_v.shape, generator=g) * 10)
    out = []
    for i in range(t):
        pos = torch.full((b, 1), i, dtype=torch.long)
        logits, k, v = model.decode_step(ids[:, i : i + 1], pos, ck, cv, cache_k, cache_v)
        assert logits.shape == (b, model.cfg.vocab_size)
        assert k.shape == v.shape == (model.cfg.n_layers, b, model.cfg.n_heads, 1, model.cfg.head_dim)
        cache_k[:, :, :, i] = k[:, :, :, 0]
        cache_v[:, :, :, i] = v[:, :, :, 0]
        out.append(logits)
    return torch.stack(out, dim=1)


@torch.no_grad()
@pytest.mark.parametrize("extra", [0, 5])
def test_decode_step_matches_decode_full(tiny_model, extra: int) -> None:
    torch.manual_seed(1)
    b, t = 2, 7
    ck, cv = _visual(tiny_model, b, seed=1)
    ids = torch.cat([torch.ones(b, 1, dtype=torch.long), torch.randint(4, tiny_model.cfg.vocab_size, (b, t - 1))], 1)
    full = tiny_model.decode_full(ids, ck, cv)
    stepped = _step_all(tiny_model, ids, ck, cv, capacity=t + extra, garbage=False)
    torch.testing.assert_close(stepped, full, atol=1e-5, rtol=0)
    # garbage in every not-yet-written slot (and, with extra > 0, in slots never written) must be ignored
    noisy = _step_all(tiny_model, ids, ck, cv, capacity=t + extra, garbage=True)
    torch.testing.assert_close(noisy, full, atol=1e-5, rtol=0)
    torch.testing.assert_close(noisy, stepped, atol=1e-6, rtol=0)


@torch.no_grad()
def test_decode_step_per_row_positions(tiny_model) -> None:
    """Rows at different positions in one call use only their own filled slots."""
    torch.manual_seed(2)
    b, t, cap = 2, 6, 9
    ck, cv = _visual(tiny_model, b, seed=2)
    ids = torch.randint(4, tiny_model.cfg.vocab_size, (b, t))
    full = tiny_model.decode_full(ids, ck, cv)
    cache_k, cache_v = tiny_model.empty_cache(b, cap)
    for i in range(t):  # fill both rows' caches up to position t-1
        pos = torch.full((b, 1), i, dtype=torch.long)
        _, k, v = tiny_model.decode_step(ids[:, i : i + 1], pos, ck, cv, cache_k, cache_v)
        cache_k[:, :, :, i] = k[:, :, :, 0]
        cache_v[:, :, :, i] = v[:, :, :, 0]
    positions = torch.tensor([[2], [5]])
    tokens = torch.stack([ids[0, 2:3], ids[1, 5:6]])
    logits, _, _ = tiny_model.decode_step(tokens, positions, ck, cv, cache_k, cache_v)
    torch.testing.assert_close(logits[0], full[0, 2], atol=1e-5, rtol=0)
    torch.testing.assert_close(logits[1], full[1, 5], atol=1e-5, rtol=0)


def test_attribute_heads_loss_ignores_unlabelled_fields() -> None:
    """The heads' loss averages the fields with labels; a batch without any label gives zero and a gradient of zero."""
    from pvlm.attribute_heads import AttributeHeads
    from pvlm.attribute_targets import HEAD_FIELDS, IGNORE

    torch.manual_seed(0)
    heads = AttributeHeads(16)
    visual = torch.randn(4, 6, 16, requires_grad=True)
    logits = heads(visual)
    assert [t.shape for t in logits] == [(4, len(f.drawn)) for f in HEAD_FIELDS]
    targets = torch.full((4, len(HEAD_FIELDS)), IGNORE)
    assert float(heads.loss(visual, targets).detach()) == 0.0
    targets[:, 0] = torch.tensor([0, 1, 2, IGNORE])
    want = torch.nn.functional.cross_entropy(logits[0][:3], torch.tensor([0, 1, 2]))
    # field 0 only, its 3 labelled rows
    assert float(heads.loss(visual, targets).detach()) == pytest.approx(float(want.detach()))
    heads.loss(visual, targets).backward()
    assert visual.grad is not None and float(visual.grad.abs().sum()) > 0


def test_attribute_heads_are_training_only() -> None:
    """Heads add parameters (counted) but not a single op to the image or decoder path."""
    cfg = PersonVLMConfig.preset("tiny", vocab_size=64)
    torch.manual_seed(0)
    plain = PersonVLM(cfg).eval()
    torch.manual_seed(0)
    with_heads = PersonVLM(cfg.replace(attribute_heads=True)).eval()
    assert plain.attribute_heads is None and with_heads.attribute_heads is not None
    counts = with_heads.param_counts()
    assert counts["attribute_heads"]["total"] > 0
    assert counts["all"]["total"] == sum(p.numel() for p in with_heads.parameters())
    pixels, ids = torch.randn(2, 3, 64, 32), torch.randint(4, 64, (2, 5))
    with torch.no_grad():  # same initial weights elsewhere (heads are built last), same logits
        assert torch.equal(plain(pixels, ids), with_heads(pixels, ids))
