"""pvlm.checkpoint: format, atomic writes, clear errors, and importing the original repository's checkpoints."""

from __future__ import annotations

import json
import random
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from pvlm import CheckpointError, PersonVLM, PersonVLMConfig, Vocabulary, load_checkpoint, save_checkpoint  # noqa: E402
from pvlm.checkpoint import rename_original_key  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _inputs(cfg: PersonVLMConfig, batch: int = 2, t: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.image_size
    pixels = torch.randn(batch, 3, h, w, generator=g)
    ids = torch.randint(4, cfg.vocab_size, (batch, t), generator=g)
    ids[:, 0] = cfg.bos_id
    return pixels, ids


# --------------------------------------------------------------------------- our format


@torch.no_grad()
def test_round_trip_gives_identical_logits(tiny_model, tiny_vocab, tiny_checkpoint) -> None:
    model, vocab, meta = load_checkpoint(tiny_checkpoint)
    assert not model.training
    assert model.cfg == tiny_model.cfg
    assert vocab == tiny_vocab and len(vocab) == model.cfg.vocab_size
    assert meta == {"note": "fixture"}
    pixels, ids = _inputs(model.cfg)
    assert torch.equal(model(pixels, ids), tiny_model(pixels, ids))
    assert model.head.weight is model.tok_emb.weight  # still tied after loading


def test_file_is_plain_weights_only(tiny_model, tiny_vocab, tiny_checkpoint) -> None:
    blob = torch.load(tiny_checkpoint, weights_only=True)
    assert set(blob) == {"format", "version", "config", "vocab", "state_dict", "meta"}
    assert blob["format"] == "pvlm-checkpoint" and blob["version"] == 1
    assert type(blob["config"]) is dict and blob["config"] == tiny_model.cfg.to_dict()
    json.dumps(blob["config"]), json.dumps(blob["vocab"]), json.dumps(blob["meta"])  # plain types only
    assert Vocabulary.from_dict(blob["vocab"]) == tiny_vocab
    assert blob["meta"] == {"note": "fixture"}
    sd = blob["state_dict"]
    assert set(sd) == set(tiny_model.state_dict())
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in sd.values())
    assert torch.equal(sd["tok_emb.weight"], tiny_model.tok_emb.weight)


def test_train_state_is_stored(tiny_model, tiny_vocab, tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "r.pt", tiny_model, tiny_vocab, train_state={"epoch": 3, "history": "[]"})
    blob = torch.load(path, weights_only=True)
    assert blob["train_state"] == {"epoch": 3, "history": "[]"}
    assert load_checkpoint(path)[0].cfg == tiny_model.cfg


def test_save_is_atomic_and_creates_parents(tiny_model, tiny_vocab, tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "model.pt"
    assert save_checkpoint(path, tiny_model, tiny_vocab) == path
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]
    save_checkpoint(path, tiny_model, tiny_vocab, {"second": True})  # overwrite in place
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]
    assert load_checkpoint(path)[2] == {"second": True}


def test_failed_save_keeps_previous_file(tiny_model, tiny_vocab, tmp_path: Path, monkeypatch) -> None:
    path = save_checkpoint(tmp_path / "model.pt", tiny_model, tiny_vocab, {"version": "old"})
    before = path.read_bytes()

    def failing_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a checkpoint")  # partial write, then the disk "fills up"
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, tiny_model, tiny_vocab, {"version": "new"})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    assert load_checkpoint(path)[2] == {"version": "old"}


@torch.no_grad()
def test_compiled_wrapper_saved_without_orig_mod_prefix(tiny_model, tiny_vocab, tmp_path: Path) -> None:
    class CompiledLike(torch.nn.Module):  # what torch.compile returns: the model under `_orig_mod`
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

    wrapped = CompiledLike(tiny_model)
    assert all(k.startswith("_orig_mod.") for k in wrapped.state_dict())
    path = save_checkpoint(tmp_path / "c.pt", wrapped, tiny_vocab)
    sd = torch.load(path, weights_only=True)["state_dict"]
    assert not any("_orig_mod" in k for k in sd)
    assert set(sd) == set(tiny_model.state_dict())
    model, _, _ = load_checkpoint(path)
    pixels, ids = _inputs(model.cfg)
    assert torch.equal(model(pixels, ids), tiny_model(pixels, ids))


# --------------------------------------------------------------------------- errors


def _bad_file(kind: str, folder: Path, good: Path) -> Path:
    path = folder / f"{kind}.pt"
    if kind == "corrupt":
        path.write_bytes(random.Random(0).randbytes(2048))
    elif kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "foreign":
        torch.save({"foo": 1}, path)
    elif kind == "version99":
        blob = torch.load(good, weights_only=True)
        blob["version"] = 99
        torch.save(blob, path)
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()
    return path  # "missing": never created


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "foreign", "missing", "version99", "tensor", "empty",
                                  "directory"])
def test_bad_files_raise_checkpoint_error_naming_the_path(kind: str, tiny_checkpoint, tmp_path: Path) -> None:
    path = _bad_file(kind, tmp_path, tiny_checkpoint)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)
    if kind == "version99":
        assert "99" in str(info.value)


def _edit(blob: dict, kind: str) -> dict:
    blob = dict(blob)
    if kind == "shape-mismatch":
        blob["config"] = {**blob["config"], "d_ff": 2 * blob["config"]["d_ff"]}
    elif kind == "missing-weights":
        blob["state_dict"] = {k: v for k, v in blob["state_dict"].items() if not k.startswith("blocks.1.")}
    elif kind == "extra-weights":
        blob["state_dict"] = {**blob["state_dict"], "blocks.9.ln1.weight": torch.ones(3)}
    elif kind == "no-config":
        del blob["config"]
    elif kind == "unknown-config-key":
        blob["config"] = {**blob["config"], "future_field": 1}
    elif kind == "bad-vocab":
        blob["vocab"] = {"words": []}
    elif kind == "config-not-dict":
        blob["config"] = [1, 2, 3]
    return blob


@pytest.mark.parametrize("kind", ["shape-mismatch", "missing-weights", "extra-weights", "no-config",
                                  "unknown-config-key", "bad-vocab", "config-not-dict"])
def test_inconsistent_contents_raise_checkpoint_error(kind: str, tiny_checkpoint, tmp_path: Path) -> None:
    path = tmp_path / f"{kind}.pt"
    torch.save(_edit(torch.load(tiny_checkpoint, weights_only=True), kind), path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("change, needle", [
    ({"d_model": 10**6}, "config d_model must be an integer from 1 to"),
    ({"n_layers": 10**4}, "config n_layers must be an integer from 1 to"),
    ({"vocab_size": 10**9}, "config vocab_size must be an integer from 1 to"),
    ({"max_len": 10**9}, "config max_len must be an integer from 1 to"),
    ({"n_heads": 0}, "config n_heads must be an integer from 1 to"),  # was a ZeroDivisionError
    ({"d_ff": True}, "config d_ff must be an integer"),
    ({"image_size": [10**6, 64]}, "config image_size must be [height, width] from 32 to"),
    ({"pad_id": 10**6}, "config pad_id must be a token id below vocab_size"),  # was an AssertionError
    ({"backbone": 7}, "malformed checkpoint config"),  # was an AttributeError
    # each size within its limit, the product far beyond: ~100 billion parameters
    ({"d_model": 8192, "n_heads": 64, "n_layers": 64, "d_ff": 65_536}, "parameters, more than the 200,000,000"),
    ({"backbone": "vit_giant_patch14_224"}, "parameters, more than the 200,000,000"),  # a 1B-parameter backbone
])
def test_absurd_config_sizes_are_refused_before_allocating(change, needle, tiny_checkpoint, tmp_path: Path) -> None:
    """Before: the model was built as the config said (gigabytes to terabytes, or a traceback)."""
    import time

    blob = torch.load(tiny_checkpoint, weights_only=True)
    blob["config"] = {**blob["config"], **change}
    path = tmp_path / "absurd.pt"
    torch.save(blob, path)
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert time.perf_counter() - t0 < 30  # counted on the meta device, never allocated
    msg = str(info.value)
    assert msg.startswith(f"{path}: ") and needle in msg and "\n" not in msg, msg


def test_parameter_limit_counts_what_loading_builds(tiny_checkpoint) -> None:
    """The count behind MAX_PARAMS is the real model's, exactly; every shipped preset is within the limits."""
    from pvlm.checkpoint import MAX_PARAMS, check_config, config_parameters
    from pvlm.model import PRESETS, count_parameters

    model, _, _ = load_checkpoint(tiny_checkpoint)
    assert config_parameters(model.cfg) == count_parameters(model) < MAX_PARAMS
    for preset in PRESETS:
        cfg = PersonVLMConfig.preset(preset)
        assert check_config(cfg.to_dict(), preset) == cfg


def test_absurd_original_config_is_refused(original, tmp_path: Path) -> None:
    path = _save_original(tmp_path / "orig.pth", _OrigPersonVLMConfig(vocab_size=V, hidden_dim=10**6), original["sd"])
    with pytest.raises(CheckpointError, match="config d_model must be an integer from 1 to"):
        load_checkpoint(path, vocab=original["vocab"])
    path = _save_original(tmp_path / "orig2.pth", _OrigPersonVLMConfig(vocab_size=V, hidden_dim="wide"),
                          original["sd"])
    with pytest.raises(CheckpointError, match="malformed original config"):
        load_checkpoint(path, vocab=original["vocab"])


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("seed", [12, 47, 49, 0, 1, 2])
def test_random_bytes_raise_checkpoint_error(seed: int, tmp_path: Path) -> None:
    """Seeds 12, 47 and 49 once escaped as KeyError, IndexError and struct.error from the unpickler."""
    rng = random.Random(seed)
    path = tmp_path / "noise.pt"
    path.write_bytes(rng.randbytes(rng.choice([1, 2, 7, 64, 2048])))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_vocab_size_mismatch(tiny_model, tmp_path: Path) -> None:
    small = Vocabulary(["<pad>", "<bos>", "<eos>", "<unk>", "man"])
    path = save_checkpoint(tmp_path / "m.pt", tiny_model, small)
    with pytest.raises(CheckpointError, match="vocabulary"):
        load_checkpoint(path)


def test_other_classes_are_refused_without_executing(tmp_path: Path) -> None:
    """A pickle naming any class but the original config is refused by the weights-only unpickler."""
    executed: list[str] = []
    mod = types.ModuleType("evil_mod")

    class Payload:
        def __setstate__(self, state):
            executed.append("setstate")
            self.__dict__.update(state)

    Payload.__module__, Payload.__qualname__ = "evil_mod", "Payload"
    mod.Payload = Payload
    sys.modules["evil_mod"] = mod
    try:
        obj = Payload()
        obj.x = 1
        path = tmp_path / "evil.pt"
        torch.save({"config": obj, "state_dict": {}}, path)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path, vocab=Vocabulary(["<pad>", "<bos>", "<eos>", "<unk>"]))
        assert str(path) in str(info.value)
        assert executed == []
        # control: a plain unpickler would have run the class's code
        torch.load(path, weights_only=False)
        assert executed == ["setstate"]
    finally:
        del sys.modules["evil_mod"]


# --------------------------------------------------------------------------- original repository import

V = 100

_LAYER_BACK = {  # ours -> original, inside decoder.layers.N
    "attn.q.": "self_attn.q_proj.", "attn.k.": "self_attn.k_proj.", "attn.v.": "self_attn.v_proj.",
    "attn.o.": "self_attn.out_proj.",
    "cross.q.": "cross_attn.q_proj.", "cross.k.": "cross_attn.k_proj.", "cross.v.": "cross_attn.v_proj.",
    "cross.o.": "cross_attn.out_proj.",
    "ln1.": "self_attn_norm.", "ln2.": "cross_attn_norm.", "ln3.": "ffn_norm.",
    "mlp.0.": "ffn.0.", "mlp.3.": "ffn.3.",
}
_TOP_BACK = [  # ours -> original
    ("vision.backbone.", "vision_encoder.backbone."),
    ("vision.proj.", "vision_encoder.output_proj."),
    ("projector.mlp.0.", "projection.projection.0."),
    ("projector.mlp.3.", "projection.projection.3."),
    ("projector.norm.", "projection.layer_norm."),
    ("tok_emb.weight", "decoder.token_embedding.weight"),
    ("pos_emb.weight", "decoder.position_embedding.weight"),
    ("ln_f.", "decoder.final_norm."),
    ("head.weight", "decoder.output_proj.weight"),
]


def to_original_key(key: str) -> str:
    """Our parameter name -> the original repository's (written independently of pvlm.checkpoint)."""
    if key == "projector.pos":
        return "projection.position_embeddings"
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
    if m:
        for ours, theirs in _LAYER_BACK.items():
            if m.group(2).startswith(ours):
                return f"decoder.layers.{m.group(1)}.{theirs}{m.group(2)[len(ours):]}"
        raise AssertionError(f"no original name for {key}")
    for ours, theirs in _TOP_BACK:
        if key.startswith(ours):
            return theirs + key[len(ours):]
    raise AssertionError(f"no original name for {key}")


@dataclass
class _OrigPersonVLMConfig:
    """Field-for-field copy of the original ``models.person_vlm.PersonVLMConfig``."""

    vision_backbone: str = "mobilevit_xs"
    vision_pretrained: bool = True
    vision_freeze_ratio: float = 0.9
    num_visual_tokens: int = 8
    projection_hidden_dim: int = 512
    decoder_size: str = "small"
    vocab_size: int = 3179
    max_seq_length: int = 256
    pad_token_id: int = 0
    bos_token_id: int = 1
    eos_token_id: int = 2
    hidden_dim: int = 256
    dropout: float = 0.1
    label_smoothing: float = 0.1


_OrigPersonVLMConfig.__module__ = "models.person_vlm"
_OrigPersonVLMConfig.__qualname__ = _OrigPersonVLMConfig.__name__ = "PersonVLMConfig"


def _save_original(path: Path, config: _OrigPersonVLMConfig, sd: dict) -> Path:
    """torch.save as the original code did, with a stand-in ``models.person_vlm`` present only while saving."""
    saved = {name: sys.modules.get(name) for name in ("models", "models.person_vlm")}
    pkg, sub = types.ModuleType("models"), types.ModuleType("models.person_vlm")
    sub.PersonVLMConfig = _OrigPersonVLMConfig
    pkg.person_vlm = sub
    sys.modules["models"], sys.modules["models.person_vlm"] = pkg, sub
    try:
        torch.save({"config": config, "state_dict": sd, "epoch": 7}, path)
    finally:  # the original code is gone before anything is loaded
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod
    return path


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> dict:
    """An original-repository checkpoint (V=100) written without the original code, plus its vocabulary."""
    folder = tmp_path_factory.mktemp("original")
    torch.manual_seed(0)
    model = PersonVLM(PersonVLMConfig.preset("seed-7m", vocab_size=V))
    with torch.no_grad():  # move every non-backbone tensor off its init value so a swapped name would show
        for name, p in model.named_parameters():
            if not name.startswith("vision.backbone."):
                p.add_(torch.randn_like(p) * 0.05)
    ours = {k: v.detach().clone() for k, v in model.state_dict().items()}
    sd = {to_original_key(k): v for k, v in ours.items()}
    assert len(sd) == len(ours)
    del model

    path = _save_original(folder / "best_model.pth", _OrigPersonVLMConfig(vocab_size=V), sd)
    tokens = ["<pad>", "<bos>", "<eos>", "<unk>"] + [f"word{i}" for i in range(V - 4)]
    vocab_path = folder / "vocabulary.json"
    vocab_path.write_text(json.dumps({"token2id": {t: i for i, t in enumerate(tokens)}, "min_freq": 5}))
    return {"path": path, "vocab": vocab_path, "sd": sd, "ours": ours, "tokens": tokens}


def test_original_key_names_round_trip(original) -> None:
    sd, ours = original["sd"], original["ours"]
    for key in sd:
        assert rename_original_key(key) in ours
    assert {rename_original_key(k) for k in sd} == set(ours)
    for key in ours:
        assert rename_original_key(to_original_key(key)) == key
    # a few names spelled out from the original code
    for key in ("decoder.layers.0.self_attn.q_proj.weight", "decoder.layers.3.cross_attn.out_proj.bias",
                "decoder.layers.1.ffn.3.weight", "decoder.layers.2.ffn_norm.bias", "projection.position_embeddings",
                "projection.projection.0.weight", "vision_encoder.output_proj.weight", "decoder.final_norm.weight",
                "decoder.output_proj.weight", "decoder.token_embedding.weight"):
        assert key in sd, key
    assert rename_original_key("decoder.layers.0.self_attn.q_proj.weight") == "blocks.0.attn.q.weight"
    assert rename_original_key("decoder.layers.3.cross_attn.out_proj.bias") == "blocks.3.cross.o.bias"


def _ln(x, sd, prefix):
    return F.layer_norm(x, x.shape[-1:], sd[prefix + "weight"], sd[prefix + "bias"])


def _lin(x, sd, prefix):
    return F.linear(x, sd[prefix + "weight"], sd.get(prefix + "bias"))


def _mha(x, mem, sd, prefix, causal: bool, heads: int = 4):
    b, t, d = x.shape
    hd = d // heads
    q = _lin(x, sd, prefix + "q_proj.").view(b, t, heads, hd).transpose(1, 2)
    k = _lin(mem, sd, prefix + "k_proj.").view(b, mem.shape[1], heads, hd).transpose(1, 2)
    v = _lin(mem, sd, prefix + "v_proj.").view(b, mem.shape[1], heads, hd).transpose(1, 2)
    scores = (q @ k.transpose(-1, -2)) * hd**-0.5
    if causal:
        scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
    return _lin(out, sd, prefix + "out_proj.")


@torch.no_grad()
def reference_logits(sd: dict, pixels: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The original architecture in torch.nn.functional, straight from the original-named state dict."""
    import timm

    pre = "vision_encoder.backbone."
    backbone = timm.create_model("mobilevit_xs", pretrained=False, num_classes=0)
    backbone.load_state_dict({k[len(pre):]: v for k, v in sd.items() if k.startswith(pre)}, strict=True)
    feats = backbone.eval()(pixels)  # global average pool -> (B, 384)
    v = _lin(feats, sd, "vision_encoder.output_proj.")
    h = _lin(F.gelu(_lin(v, sd, "projection.projection.0.")), sd, "projection.projection.3.")
    visual = _ln(h.view(pixels.shape[0], 8, 256) + sd["projection.position_embeddings"], sd, "projection.layer_norm.")
    tok = sd["decoder.token_embedding.weight"]
    x = tok[ids] + sd["decoder.position_embedding.weight"][torch.arange(ids.shape[1])]
    for n in range(4):
        p = f"decoder.layers.{n}."
        x = x + _mha(_ln(x, sd, p + "self_attn_norm."), _ln(x, sd, p + "self_attn_norm."), sd, p + "self_attn.", True)
        x = x + _mha(_ln(x, sd, p + "cross_attn_norm."), visual, sd, p + "cross_attn.", False)
        y = _ln(x, sd, p + "ffn_norm.")
        x = x + _lin(F.gelu(_lin(y, sd, p + "ffn.0.")), sd, p + "ffn.3.")
    return _ln(x, sd, "decoder.final_norm.") @ tok.T


@torch.no_grad()
def test_original_checkpoint_matches_functional_reference(original) -> None:
    assert "models" not in sys.modules and "models.person_vlm" not in sys.modules
    model, vocab, meta = load_checkpoint(original["path"], vocab=original["vocab"])
    assert "models.person_vlm" not in sys.modules  # nothing imported the original code
    cfg = model.cfg
    assert (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.d_ff) == (256, 4, 4, 512)
    assert (cfg.num_visual_tokens, cfg.projection_hidden, cfg.vocab_size, cfg.max_len) == (8, 512, V, 256)
    assert cfg.visual_tokens == "pooled" and cfg.image_size == (224, 224) and not cfg.pretrained_backbone
    assert vocab.itos == original["tokens"] and vocab.min_freq == 5
    assert meta["imported_from"] == "rishi02102017/PersonVLM"
    assert not model.training
    pixels, ids = _inputs(cfg, batch=2, t=6, seed=3)
    ours = model(pixels, ids)
    ref = reference_logits(original["sd"], pixels, ids)
    assert ours.shape == ref.shape == (2, 6, V)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


def test_original_checkpoint_accepts_vocabulary_object(original) -> None:
    vocab = Vocabulary.load(original["vocab"])
    model, voc, _ = load_checkpoint(original["path"], vocab=vocab)
    assert voc is vocab
    assert torch.equal(model.tok_emb.weight, original["sd"]["decoder.token_embedding.weight"])
    assert torch.equal(model.blocks[2].cross.o.bias, original["sd"]["decoder.layers.2.cross_attn.out_proj.bias"])


def test_original_checkpoint_without_vocab_raises(original) -> None:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(original["path"])
    assert str(original["path"]) in str(info.value) and "vocab" in str(info.value)


def test_original_checkpoint_with_wrong_vocab_size_raises(original) -> None:
    vocab = Vocabulary(["<pad>", "<bos>", "<eos>", "<unk>", "man"])
    with pytest.raises(CheckpointError, match="vocabulary"):
        load_checkpoint(original["path"], vocab=vocab)


@pytest.mark.parametrize("size", ["tiny", "medium", "gigantic"])
def test_original_checkpoint_with_mismatched_decoder_size_raises(size: str, original, tmp_path: Path) -> None:
    """Weights of the 'small' decoder under another decoder_size: a clear error, not a RuntimeError."""
    path = _save_original(tmp_path / "orig.pth", _OrigPersonVLMConfig(vocab_size=V, decoder_size=size), original["sd"])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, vocab=original["vocab"])
    assert str(path) in str(info.value)


def test_original_checkpoint_exports_and_validates(original, tmp_path: Path) -> None:
    """Completeness: a checkpoint of the original repository (the seed-7m preset) exports to a verified bundle."""
    from export import export_onnx

    bundle = export_onnx(original["path"], tmp_path / "b", vocab=original["vocab"], max_batch=16, max_new_tokens=8)
    manifest = json.loads((bundle / "manifest.json").read_text())
    parity = manifest["verification"]["parity"]
    assert parity["sequences_identical"] == parity["images"] >= 32
    assert parity["logits_max_abs_diff"] < 1e-4 and parity["encoder_max_abs_diff"] < 1e-4
    assert manifest["model"]["backbone"] == "mobilevit_xs" and manifest["model"]["vocab_size"] == V
    assert manifest["source"]["meta"]["imported_from"] == "rishi02102017/PersonVLM"
