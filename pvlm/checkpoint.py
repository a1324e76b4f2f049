"""Checkpoints: plain types + tensors (the layout is :func:`save_checkpoint`'s docstring), atomic writes,
bounded loading, original-repo import."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from runtime.atomic import atomic_path
from runtime.bundle import (MAX_D_MODEL, MAX_HEADS, MAX_IMAGE_SIDE, MAX_LAYERS, MAX_POSITIONS, MAX_VISUAL_TOKENS,
                            MAX_VOCAB)

from .model import PersonVLM, PersonVLMConfig, count_parameters
from .vocab import Vocabulary

FORMAT = "pvlm-checkpoint"
VERSION = 1
# The design caps a model at 100M parameters; twice that leaves headroom and still refuses, before anything is
# allocated, a config that would need gigabytes.
MAX_PARAMS = 200_000_000
# Each size a config declares: the bundle's limits (runtime/bundle/format.py) where a bundle carries it, so whatever
# loads here also exports to a bundle the runtime accepts.
CONFIG_LIMITS = {"n_layers": MAX_LAYERS, "n_heads": MAX_HEADS, "d_model": MAX_D_MODEL, "vocab_size": MAX_VOCAB,
                 "max_len": MAX_POSITIONS, "d_ff": 65_536, "projection_hidden": 65_536, "vision_dim": 65_536,
                 "num_visual_tokens": MAX_VISUAL_TOKENS}


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint of a supported format."""


def save_checkpoint(
    path: str | os.PathLike, model: PersonVLM, vocab: Vocabulary, meta: dict | None = None,
    train_state: dict | None = None,
) -> Path:
    """Write ``model`` (unwrapped), its config and vocabulary atomically (temp file + rename).

    The file is a ``torch.save`` dict of plain types and tensors only (loadable with ``weights_only=True``):
    ``format`` (``pvlm-checkpoint``), ``version`` (1), ``config`` (``PersonVLMConfig.to_dict()``), ``vocab``
    (``Vocabulary.to_dict()``), ``state_dict`` (name -> tensor, no ``_orig_mod.`` prefixes), ``meta`` (a
    plain dict), and ``train_state`` (optimizer/scheduler state dicts, counters) when given, which makes the
    file resumable.
    """
    path = Path(path)
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    state = {k.removeprefix("_orig_mod."): v.detach().cpu() for k, v in model.state_dict().items()}
    blob = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.cfg.to_dict(),
        "vocab": vocab.to_dict(),
        "state_dict": state,
        "meta": dict(meta or {}),
    }
    if train_state is not None:
        blob["train_state"] = train_state
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)
    return path


def load_checkpoint(
    path: str | os.PathLike, vocab: str | os.PathLike | Vocabulary | None = None, map_location: str = "cpu"
) -> tuple[PersonVLM, Vocabulary, dict[str, Any]]:
    """Load ours, or an original-repository checkpoint (then ``vocab`` is its vocabulary.json).

    Returns ``(model in eval mode, vocabulary, meta)``. Never unpickles arbitrary classes. The config is
    checked before any model is built (:func:`check_config`): each size within :data:`CONFIG_LIMITS` and the
    whole model at most :data:`MAX_PARAMS` parameters; anything else is one :class:`CheckpointError` line.
    """
    blob = read_checkpoint(path, map_location)
    if blob.get("format") == FORMAT:
        if blob.get("version") != VERSION:
            raise CheckpointError(f"{path}: checkpoint format version {blob.get('version')} is not supported "
                                  f"(this toolkit reads version {VERSION})")
        if "config" not in blob:
            raise CheckpointError(f"{path}: malformed checkpoint (KeyError: 'config')")
        cfg = check_config(blob["config"], path)
        try:
            voc = Vocabulary.from_dict(blob["vocab"])
            state, meta = blob["state_dict"], dict(blob.get("meta", {}))
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: malformed checkpoint ({type(e).__name__}: {e})") from None
    else:
        cfg, state = _from_original(path, blob)
        if vocab is None:
            raise CheckpointError(f"{path}: original-repository checkpoint; pass its vocabulary.json as vocab=")
        voc = vocab if isinstance(vocab, Vocabulary) else Vocabulary.load(vocab)
        meta = {"imported_from": "rishi02102017/PersonVLM", "source": str(path)}
    if len(voc) != cfg.vocab_size:
        raise CheckpointError(f"{path}: vocabulary has {len(voc)} tokens but the model expects {cfg.vocab_size}")
    model = PersonVLM(cfg, load_pretrained=False)  # the checkpoint carries the backbone's weights
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # tensor shapes disagree with the config
        detail = " ".join(str(e).split())[:240]
        raise CheckpointError(f"{path}: weights do not match the config ({detail})") from None
    missing = [k for k in missing if k != "head.weight"]  # tied to tok_emb
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval(), voc, meta


def check_config(config: Any, path: str | os.PathLike) -> PersonVLMConfig:
    """A checkpoint's config dict as a :class:`PersonVLMConfig`, refused (:class:`CheckpointError` naming
    ``path``) when malformed, when a size is outside :data:`CONFIG_LIMITS` (ids outside the vocabulary, an
    image side outside 32..``MAX_IMAGE_SIDE``), or when the model it describes has more than
    :data:`MAX_PARAMS` parameters (counted on PyTorch's meta device: nothing is allocated)."""
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: malformed checkpoint (config is a {type(config).__name__}, not a dict)")
    for key, high in CONFIG_LIMITS.items():
        value = config.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise CheckpointError(f"{path}: config {key} must be an integer from 1 to {high}, got {value!r:.40}")
    vocab = config.get("vocab_size", PersonVLMConfig.vocab_size)
    for key in ("pad_id", "bos_id", "eos_id", "unk_id"):
        value = config.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < vocab:
            raise CheckpointError(f"{path}: config {key} must be a token id below vocab_size {vocab}, "
                                  f"got {value!r:.40}")
    size = config.get("image_size", PersonVLMConfig.image_size)
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and 32 <= v <= MAX_IMAGE_SIDE for v in size)):
        raise CheckpointError(f"{path}: config image_size must be [height, width] from 32 to {MAX_IMAGE_SIDE}, "
                              f"got {size!r:.40}")
    try:
        cfg = PersonVLMConfig.from_dict(config)
        n = config_parameters(cfg)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:  # RuntimeError: unknown backbone
        detail = " ".join(str(e).split())[:160]
        raise CheckpointError(f"{path}: malformed checkpoint config ({type(e).__name__}: {detail})") from None
    if n > MAX_PARAMS:
        raise CheckpointError(f"{path}: the config describes a model of {n:,} parameters, more than the "
                              f"{MAX_PARAMS:,} this toolkit loads")
    return cfg


def config_parameters(cfg: PersonVLMConfig) -> int:
    """Parameters of the model ``cfg`` describes (tied head once), counted on PyTorch's meta device: no memory."""
    with torch.device("meta"):
        return count_parameters(PersonVLM(cfg, load_pretrained=False))


class _OriginalConfig:
    """Stand-in for the original ``models.person_vlm.PersonVLMConfig``: only holds attributes."""


_ORIGINAL_GLOBALS = [(_OriginalConfig, "models.person_vlm.PersonVLMConfig")]
# The original's decoder sizes (layers, heads, ffn); width comes from its hidden_dim.
_ORIGINAL_DECODERS = {"tiny": (3, 4, 384), "small": (4, 4, 512), "medium": (5, 8, 640), "large": (6, 8, 2048)}


def read_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with clear errors; only the original config class is allowed."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        # torch's warnings (pickle protocol, storage deprecations) say nothing the error below does not
        with torch.serialization.safe_globals(_ORIGINAL_GLOBALS), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            blob = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt bytes surface as UnpicklingError, IndexError, KeyError, struct.error...
        raise CheckpointError(_load_error(path, e)) from None
    if not isinstance(blob, dict) or not any(k in blob for k in ("state_dict", "model_state_dict")):
        raise CheckpointError(f"{path}: not a PersonVLM checkpoint (no state_dict inside)")
    return blob


def _load_error(path: str | os.PathLike, e: Exception) -> str:
    """Our words for a failed weights-only load (torch's own message advises ``weights_only=False``)."""
    text = str(e)
    m = re.search(r"WeightsUnpickler error: ([^\n]*)", text)
    detail = (m.group(1) if m else (text.strip().splitlines() or [""])[0]).strip()
    if "Weights only load failed" in detail:  # no unpickler detail: keep nothing of torch's advice
        detail = ""
    g = re.search(r"Unsupported global: GLOBAL ([\w.]+)", detail)
    if g:
        return (f"{path}: refused: it holds a pickled Python object ({g.group(1)}) that no PersonVLM checkpoint "
                "contains, and loading it could run code from the file")
    detail = f"{type(e).__name__}: {detail[:120]}" if detail else type(e).__name__
    return f"{path}: not a readable PersonVLM checkpoint (corrupt, truncated or not a PyTorch file; {detail})"


def _from_original(path: str | os.PathLike, blob: dict[str, Any]) -> tuple[PersonVLMConfig, dict[str, torch.Tensor]]:
    """Map an original-repository checkpoint onto our config (checked as :func:`check_config` checks ours) and
    parameter names."""
    raw = blob.get("config")
    attrs = vars(raw) if isinstance(raw, _OriginalConfig) else raw
    if not isinstance(attrs, dict):
        raise CheckpointError(f"{path}: unknown checkpoint format (no config)")
    size = attrs.get("decoder_size", "small")
    if size not in _ORIGINAL_DECODERS:
        raise CheckpointError(f"{path}: unknown original decoder_size {size!r}")
    layers, heads, ffn = _ORIGINAL_DECODERS[size]
    try:
        hidden = int(attrs.get("hidden_dim", 256))
        config = dict(
            backbone=attrs.get("vision_backbone", "mobilevit_xs"), visual_tokens="pooled", image_size=[224, 224],
            vision_dim=hidden, num_visual_tokens=int(attrs.get("num_visual_tokens", 8)),
            projection_hidden=int(attrs.get("projection_hidden_dim") or 2 * hidden), d_model=hidden,
            n_layers=layers, n_heads=heads, d_ff=ffn, vocab_size=int(attrs.get("vocab_size", 3179)),
            max_len=int(attrs.get("max_seq_length", 256)), pad_id=int(attrs.get("pad_token_id", 0)),
            bos_id=int(attrs.get("bos_token_id", 1)), eos_id=int(attrs.get("eos_token_id", 2)),
            dropout=float(attrs.get("dropout", 0.1)),
        )
    except (TypeError, ValueError, OverflowError) as e:
        raise CheckpointError(f"{path}: malformed original config ({type(e).__name__}: {e})") from None
    cfg = check_config(config, path)
    state = blob.get("state_dict", blob.get("model_state_dict"))
    return cfg, {rename_original_key(k): v for k, v in state.items()}


_RENAMES = [
    ("vision_encoder.backbone.", "vision.backbone."),
    ("vision_encoder.output_proj.", "vision.proj."),
    ("projection.projection.", "projector.mlp."),
    ("projection.layer_norm.", "projector.norm."),
    ("projection.position_embeddings", "projector.pos"),
    ("decoder.token_embedding.", "tok_emb."),
    ("decoder.position_embedding.", "pos_emb."),
    ("decoder.final_norm.", "ln_f."),
    ("decoder.output_proj.", "head."),
    ("decoder.layers.", "blocks."),
]
_LAYER_RENAMES = [
    (".self_attn_norm.", ".ln1."), (".cross_attn_norm.", ".ln2."), (".ffn_norm.", ".ln3."),
    (".self_attn.", ".attn."), (".cross_attn.", ".cross."), (".ffn.", ".mlp."),
    ("_proj.", "."),  # q_proj/k_proj/v_proj -> q/k/v
    (".out.", ".o."),
]


def rename_original_key(key: str) -> str:
    """Original parameter name -> ours (e.g. ``decoder.layers.0.self_attn.q_proj.weight`` -> ``blocks.0.attn.q.weight``)."""
    for old, new in _RENAMES:
        if key.startswith(old):
            key = new + key[len(old):]
            break
    if key.startswith("blocks."):
        for old, new in _LAYER_RENAMES:
            key = key.replace(old, new)
    return key
