"""pvlm.train: a tiny end-to-end run, checkpoints, resume, schedule and device selection."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from pvlm import CheckpointError, load_checkpoint  # noqa: E402
from pvlm.train import TrainConfig, lr_factor, pick_device, train, unigram_loss  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(synth_dir: Path, out: Path, **kw) -> TrainConfig:
    base = dict(train=str(synth_dir / "train.jsonl"), val=str(synth_dir / "val.jsonl"), out=str(out), preset="tiny",
                image_size=(64, 32), epochs=3, batch_size=8, lr=3e-3, warmup_steps=2, progress=False, min_freq=1,
                device="cpu")
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def run(synth_dir, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("train") / "run"
    result = train(_config(synth_dir, out))
    return {"out": out, "result": result}


def test_outputs_written(run) -> None:
    out, result = run["out"], run["result"]
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "history.json", "last.pt"]  # no temp files
    assert result["best"] == str(out / "best.pt") and result["last"] == str(out / "last.pt")
    history = json.loads((out / "history.json").read_text())
    assert history["unigram_val_loss"] == pytest.approx(result["unigram_val_loss"])
    epochs = history["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert [e["step"] for e in epochs] == [4, 8, 12]  # 36 images, batch 8, last partial batch dropped
    assert epochs == result["epochs"]
    assert all(math.isfinite(e["train_loss"]) and math.isfinite(e["val_loss"]) for e in epochs)


def test_model_learns_beyond_unigram_baseline(run) -> None:
    result = run["result"]
    epochs = result["epochs"]
    baseline = result["unigram_val_loss"]
    assert 0 < baseline < math.log(256)
    assert epochs[-1]["val_loss"] < baseline
    assert epochs[-1]["val_loss"] < epochs[0]["val_loss"]
    assert result["best_val_loss"] == pytest.approx(min(e["val_loss"] for e in epochs))


@torch.no_grad()
def test_checkpoints_load_and_reproduce(run) -> None:
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 3, 64, 32, generator=g)
    for name in ("best.pt", "last.pt"):
        m1, v1, meta = load_checkpoint(run["out"] / name)
        m2, v2, _ = load_checkpoint(run["out"] / name)
        assert v1 == v2 and m1.cfg == m2.cfg
        assert m1.cfg.image_size == (64, 32) and m1.cfg.vocab_size == len(v1)
        ids = torch.tensor([v1.encode("a man wearing a red shirt")[:6]] * 2)
        assert torch.equal(m1(pixels, ids), m2(pixels, ids))
        assert meta["preset"] == "tiny" and meta["train_size"] == 36 and meta["val_size"] == 12
        assert meta["unigram_val_loss"] == pytest.approx(run["result"]["unigram_val_loss"])
    best_meta = load_checkpoint(run["out"] / "best.pt")[2]
    assert best_meta["val_loss"] == pytest.approx(run["result"]["best_val_loss"])
    last = torch.load(run["out"] / "last.pt", weights_only=True)
    assert last["train_state"]["epoch"] == 3 and last["train_state"]["step"] == 12
    assert "train_state" not in torch.load(run["out"] / "best.pt", weights_only=True)


def test_resume_continues_epoch_counter(run, synth_dir, tmp_path: Path) -> None:
    result = train(_config(synth_dir, tmp_path / "resumed", epochs=4, resume=str(run["out"] / "last.pt")))
    epochs = result["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]
    assert epochs[:3] == run["result"]["epochs"]  # history carried over unchanged
    assert epochs[3]["step"] == 16
    history = json.loads((tmp_path / "resumed" / "history.json").read_text())
    assert len(history["epochs"]) == 4
    last = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert last["train_state"]["epoch"] == 4
    # the resumed run starts from the trained weights, not from scratch
    assert epochs[3]["val_loss"] < run["result"]["epochs"][0]["val_loss"]


def test_resume_continues_exactly(synth_dir, tmp_path: Path, monkeypatch) -> None:
    """A 4-epoch run killed during epoch 4 and resumed == the same run uninterrupted (batch order, RNG, schedule)."""
    import pvlm.train as train_mod

    straight = train(_config(synth_dir, tmp_path / "straight", epochs=4))
    real, calls = train_mod.evaluate_loss, []

    def dies_in_epoch_4(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "evaluate_loss", dies_in_epoch_4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(_config(synth_dir, tmp_path / "killed", epochs=4))
    monkeypatch.setattr(train_mod, "evaluate_loss", real)
    resumed = train(_config(synth_dir, tmp_path / "killed", epochs=4, resume=str(tmp_path / "killed" / "last.pt")))
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2, 3, 4]
    assert resumed["epochs"][3]["val_loss"] == pytest.approx(straight["epochs"][3]["val_loss"], abs=1e-6)
    assert resumed["epochs"][3]["train_loss"] == pytest.approx(straight["epochs"][3]["train_loss"], abs=1e-6)


def test_resume_from_best_is_refused(run, synth_dir, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="training state"):
        train(_config(synth_dir, tmp_path / "x", epochs=4, resume=str(run["out"] / "best.pt")))


def test_holdout_split_and_max_steps(synth_dir, tmp_path: Path) -> None:
    result = train(_config(synth_dir, tmp_path / "h", val=None, val_fraction=0.25, epochs=5, max_steps=2))
    assert len(result["epochs"]) == 1 and result["epochs"][0]["step"] == 2
    meta = load_checkpoint(tmp_path / "h" / "last.pt")[2]
    assert (meta["train_size"], meta["val_size"]) == (27, 9)


def test_no_usable_images_raises(tmp_path: Path) -> None:
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text(json.dumps({"image": "missing.png", "answer": "a man"}) + "\n")
    with pytest.raises(ValueError, match="usable"):
        train(TrainConfig(train=str(jsonl), out=str(tmp_path / "o"), preset="tiny", progress=False, device="cpu"))


# --------------------------------------------------------------------------- schedule, baseline, device


def test_lr_factor_warmup_then_cosine() -> None:
    warmup, total, floor = 5, 50, 0.1
    f = [lr_factor(s, warmup, total, floor) for s in range(total + 10)]
    assert f[0] == pytest.approx(1 / warmup)
    assert all(a < b for a, b in zip(f[:warmup], f[1:warmup]))  # strictly increasing during warmup
    assert f[warmup - 1] == pytest.approx(1.0) and f[warmup] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[warmup:], f[warmup + 1 :]))  # non-increasing afterwards
    mid = warmup + (total - warmup) // 2
    assert f[mid] == pytest.approx(floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (mid - warmup) / (total - warmup))))
    assert f[total] == pytest.approx(floor)
    assert f[-1] == pytest.approx(floor)  # clamped past the end
    assert min(f) == pytest.approx(floor) and max(f) == pytest.approx(1.0)


def test_unigram_loss() -> None:
    # vocab 4; train targets: [2, 3] and [3]; counts (add-one) = [1, 1, 2, 3] -> p(3) = 3/7, p(2) = 2/7
    loss = unigram_loss([[1, 2, 3], [1, 3]], [[1, 3, 2]], 4)
    assert loss == pytest.approx(-(math.log(3 / 7) + math.log(2 / 7)) / 2)


def test_pick_device(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA"):
        pick_device("cuda")
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="--device"):
        pick_device("tpu")
    if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        assert pick_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="MPS"):
            pick_device("mps")


# --------------------------------------------------------------------------- pretrained-backbone recipe


def test_param_groups_give_the_backbone_a_lower_lr_and_skip_frozen_tensors() -> None:
    import torch

    from pvlm import PersonVLM, PersonVLMConfig
    from pvlm.train import param_groups

    model = PersonVLM(PersonVLMConfig.preset("tiny", freeze_ratio=0.5))
    groups = param_groups(model, lr=1e-3, weight_decay=0.01, backbone_lr_scale=0.1)
    backbone = {id(p) for p in model.vision.backbone.parameters()}
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters() if p.requires_grad)  # each trainable once
    for g in groups:
        in_bb = {id(p) in backbone for p in g["params"]}
        assert len(in_bb) == 1
        assert g["lr"] == pytest.approx(1e-4 if in_bb == {True} else 1e-3)
        assert g["weight_decay"] == (0.01 if all(p.dim() >= 2 for p in g["params"]) else 0.0)
    assert {g["name"] for g in groups} == {"backbone", "backbone-nodecay", "head", "head-nodecay"}
    opt = torch.optim.AdamW(groups, lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5)
    assert sorted(sched.get_last_lr()) == pytest.approx([5e-5, 5e-5, 5e-4, 5e-4])  # the schedule scales both


def test_augment_is_seeded_keeps_colours_and_never_flips_a_left_right_caption() -> None:
    import numpy as np

    from pvlm.data import Augment

    img = np.zeros((64, 32, 3), np.uint8)
    img[:, :16] = (200, 30, 35)  # red left half, blue right half
    img[:, 16:] = (35, 70, 190)
    aug = Augment(seed=3)
    a, b = aug(img, "a man", 0, 5), aug(img, "a man", 0, 5)
    assert a.shape == img.shape and a.dtype == np.uint8 and np.array_equal(a, b)
    assert not np.array_equal(a, aug(img, "a man", 1, 5))
    left_red = [int(aug(img, cap, e, 0)[32, 2, 0] > 128) for e in range(40) for cap in ["a bag in his left hand"]]
    assert all(left_red)  # never mirrored
    mirrored = [int(aug(img, "a man", e, 0)[32, 2, 0] < 128) for e in range(40)]
    assert 5 < sum(mirrored) < 35
    for e in range(10):  # brightness only: the red stays red (channel ratios kept within rounding)
        px = aug(img, "a man", e, 0)[32, 2 if aug(img, "a man", e, 0)[32, 2, 0] > 128 else 29].astype(float)
        assert abs(px[1] / px[0] - 30 / 200) < 0.02 and abs(px[2] / px[0] - 35 / 200) < 0.02


def test_same_command_same_metrics(synth_dir, tmp_path: Path) -> None:
    a = train(_config(synth_dir, tmp_path / "a", epochs=2, threads=1))
    b = train(_config(synth_dir, tmp_path / "b", epochs=2, threads=1))
    assert [e["val_loss"] for e in a["epochs"]] == [e["val_loss"] for e in b["epochs"]]
    assert [e["train_loss"] for e in a["epochs"]] == [e["train_loss"] for e in b["epochs"]]


def test_frozen_prefix_cache_reproduces_the_model_and_trains(synth_dir, tmp_path: Path) -> None:
    import torch

    from pvlm import PersonVLM, PersonVLMConfig
    from pvlm.feature_cache import FrozenPrefix

    torch.manual_seed(0)
    model = PersonVLM(PersonVLMConfig.preset("tiny", freeze_ratio=0.5)).eval()
    split = FrozenPrefix(model)
    assert 0 < split.n_frozen and split.usable()
    pixels, ids = torch.randn(3, 3, 64, 32), torch.randint(4, 200, (3, 7))
    with torch.no_grad():
        assert torch.allclose(model(pixels, ids), split.logits(split.features(pixels).half(), ids), atol=2e-2)
    assert not FrozenPrefix(PersonVLM(PersonVLMConfig.preset("tiny"))).usable()  # nothing frozen, nothing cached
    # one copy and no augmentation: the same training as without the cache, up to float16 features
    res = train(_config(synth_dir, tmp_path / "c", epochs=3, freeze_ratio=0.5, cache_copies=1, augment=False))
    ref = train(_config(synth_dir, tmp_path / "r", epochs=3, freeze_ratio=0.5, augment=False))
    assert res["epochs"][-1]["val_loss"] < res["epochs"][0]["val_loss"]
    assert res["epochs"][-1]["val_loss"] == pytest.approx(ref["epochs"][-1]["val_loss"], abs=0.02)
    loaded, _, _ = load_checkpoint(res["best"])  # the checkpoint is a whole model, as without the cache
    assert loaded.cfg.freeze_ratio == 0.5


def test_attribute_heads_train_through_the_cache(synth_dir, tmp_path: Path, monkeypatch) -> None:
    """A preset with attribute heads trains over cached features, the heads learn, and weight 0 leaves them alone."""
    import torch

    from pvlm import model as model_mod
    from pvlm.data import CaptionDataset, collate, load_jsonl

    monkeypatch.setitem(model_mod.PRESETS, "tiny", {**model_mod.PRESETS["tiny"], "attribute_heads": True})
    kw = dict(epochs=20, freeze_ratio=0.5, cache_copies=1, augment=False)
    runs = {w: train(_config(synth_dir, tmp_path / f"w{w}", attribute_weight=w, **kw)) for w in (2.0, 0.0)}
    assert runs[2.0]["epochs"][-1]["val_loss"] < runs[2.0]["epochs"][0]["val_loss"]
    (trained, vocab, _), (unweighted, _, _) = (load_checkpoint(runs[w]["best"]) for w in (2.0, 0.0))
    torch.manual_seed(0)
    fresh = model_mod.PersonVLM(trained.cfg)
    for a, b in zip(unweighted.attribute_heads.parameters(), fresh.attribute_heads.parameters()):
        assert torch.equal(a, b)  # weight 0: no gradient ever reached the heads
    ds = CaptionDataset(load_jsonl(synth_dir / "train.jsonl"), vocab, trained.cfg, progress=False)
    pixels, _, targets = collate([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        losses = [float(m.eval().attribute_heads.loss(m.encode_image(pixels), targets)) for m in (trained, unweighted)]
    assert losses[0] < 0.75 * losses[1], losses  # the heads' loss on the training crops fell


def test_attribute_loss_trains_only_the_known_labels() -> None:
    """Records with some attributes null train each head on its known labels only; an all-unknown field adds
    nothing and its head gets a zero (not a missing) gradient; the value equals the heads' own loss."""
    from pvlm.attribute_heads import AttributeHeads
    from pvlm.attribute_targets import HEAD_FIELDS, IGNORE, attribute_targets
    from pvlm.train_step import attribute_terms, masked_mean

    torch.manual_seed(0)
    heads = AttributeHeads(16)
    visual = torch.randn(3, 5, 16)
    keys = [f.key for f in HEAD_FIELDS]
    rows = [{"gender": "female", "view": None, "upper": "coat"}, {"gender": "male", "view": None, "upper": None},
            {"gender": None, "view": None, "upper": None}]
    targets = torch.tensor([attribute_targets(r) for r in rows])
    sums, counts = attribute_terms(heads(visual), targets)
    loss = masked_mean(sums, counts)
    assert counts[keys.index("gender")] == 2 and counts[keys.index("upper")] == 1 and counts[keys.index("view")] == 0
    assert loss.item() == pytest.approx(heads.loss(visual, targets).item(), rel=1e-5)
    logits = heads(visual)
    g = keys.index("gender")
    by_hand = torch.nn.functional.cross_entropy(logits[g][:2], targets[:2, g])  # the third record says nothing
    assert (sums[g] / counts[g]).item() == pytest.approx(by_hand.item(), rel=1e-5)
    loss.backward()
    view_head = heads.out[keys.index("view")]
    assert view_head.weight.grad is not None and torch.count_nonzero(view_head.weight.grad) == 0
    assert torch.count_nonzero(heads.out[g].weight.grad) > 0
    none_known = torch.full_like(targets, IGNORE)
    empty = masked_mean(*attribute_terms(heads(visual), none_known))
    assert empty.item() == 0.0 and empty.requires_grad


def test_imported_labels_with_nulls_train_the_heads(tmp_path: Path, monkeypatch) -> None:
    """An imported-style dataset (attributes with nulls, MSP60k one_hot rows) trains a preset with heads."""
    import numpy as np
    from PIL import Image

    from pvlm import model as model_mod

    monkeypatch.setitem(model_mod.PRESETS, "tiny", {**model_mod.PRESETS["tiny"], "attribute_heads": True})
    rng = np.random.default_rng(0)
    one_hot = [0] * 58
    for bit in (1, 3, 17, 23, 30, 52):  # male adult, front, jacket, trousers, walking
        one_hot[bit] = 1
    rows = []
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (64, 32, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        row = {"image": f"{i}.png", "answer": "a man wearing a red jacket, walking"}
        if i % 2:
            row["one_hot"] = one_hot
        else:
            row["attributes"] = {"gender": "female", "upper_color": "red", "view": None, "carrying": None}
        rows.append(json.dumps(row))
    (tmp_path / "d.jsonl").write_text("\n".join(rows) + "\n")
    cfg = TrainConfig(train=str(tmp_path / "d.jsonl"), out=str(tmp_path / "out"), preset="tiny", image_size=(64, 32),
                      epochs=2, batch_size=4, val_fraction=0.25, warmup_steps=1, progress=False, min_freq=1,
                      device="cpu", attribute_weight=1.0)
    result = train(cfg)
    assert all(math.isfinite(e["train_loss"]) for e in result["epochs"])
