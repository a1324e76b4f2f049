"""Frozen-prefix feature cache: a frozen backbone's leading blocks run once per image, not once per epoch.

With a pretrained backbone most of the forward cost sits in the frozen high-resolution stages
(lite0 at 192x96, freeze 0.7: stem to stride 16). Their output depends only on the image (the
frozen batch norms use running statistics), so training computes it once per image and
augmentation copy, stores it (float16) and runs only the trainable blocks, projector and decoder
per step. The split is checked against the whole model before it is used.
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn
from tqdm import tqdm

from .data import CaptionDataset
from .model import PersonVLM, _backbone_units

log = logging.getLogger(__name__)


class FrozenPrefix:
    """The model split at the end of its frozen leading backbone blocks."""

    def __init__(self, model: PersonVLM):
        self.model = model
        units = _backbone_units(model.vision.backbone)
        k = 0
        while k < len(units) and not any(p.requires_grad for p in units[k].parameters()):
            k += 1
        self.prefix, self.suffix = nn.Sequential(*units[:k]), nn.Sequential(*units[k:])
        self.n_frozen = k

    def usable(self) -> bool:
        """Whether the split reproduces the model (spatial tokens, a frozen prefix, blocks run in sequence)."""
        m = self.model
        if m.cfg.visual_tokens != "spatial" or self.n_frozen == 0:
            return False
        was_training = m.training
        m.eval()
        h, w = m.cfg.image_size
        g = torch.Generator().manual_seed(0)
        pixels = torch.randn(2, 3, h, w, generator=g)
        ids = torch.randint(4, m.cfg.vocab_size, (2, 5), generator=g)
        try:
            with torch.no_grad():
                ok = torch.allclose(m(pixels, ids), self.logits(self.features(pixels), ids), atol=1e-4, rtol=1e-4)
        except (RuntimeError, TypeError, ValueError) as e:  # a backbone whose children are not a plain chain
            log.info("frozen-prefix cache not usable: %s", e)
            ok = False
        m.train(was_training)
        return ok

    @torch.no_grad()
    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels (B, 3, H, W) -> the frozen prefix's output (B, C, h, w), deterministic (eval mode)."""
        mode = self.model.training
        self.prefix.eval()
        try:
            return self.prefix(pixels)
        finally:
            self.model.train(mode)

    def visual(self, feats: torch.Tensor) -> torch.Tensor:
        """Visual tokens (B, n_visual, d_model) from prefix features: what ``model.encode_image`` computes."""
        grid = self.suffix(feats.float())  # (B, C, h, w)
        return self.model.projector(grid.flatten(2).transpose(1, 2))

    def logits(self, feats: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, T, vocab) from :meth:`features`: what ``model(pixels, ids)`` computes."""
        return self.model.decode_visual(input_ids, self.visual(feats))


class CachedFeatures(torch.utils.data.Dataset):
    """``copies`` augmentation draws of every image through the frozen prefix, float16; copy = epoch % copies."""

    def __init__(self, split: FrozenPrefix, ds: CaptionDataset, copies: int, batch_size: int = 64,
                 progress: bool = True):
        self.ids, self.targets, self.epoch = ds.ids, ds.targets, 0
        self.copies: list[torch.Tensor] = []
        total = copies * len(ds)
        bar = tqdm(total=total, desc="caching frozen features", unit="img", disable=not progress, leave=False)
        saved = ds.epoch
        for c in range(copies):
            ds.epoch = c  # the augmentation draws of epoch c
            chunks = []
            for start in range(0, len(ds), batch_size):
                pixels = torch.stack([ds[i][0] for i in range(start, min(len(ds), start + batch_size))])
                chunks.append(split.features(pixels).half())
                bar.update(len(pixels))
            self.copies.append(torch.cat(chunks))
        ds.epoch = saved
        bar.close()
        log.info("cached %d x %d frozen feature maps %s (%.0f MB)", copies, len(ds),
                 tuple(self.copies[0].shape[1:]), sum(t.numel() * 2 for t in self.copies) / 2**20)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.copies[self.epoch % len(self.copies)][i]
        return feats, torch.tensor(self.ids[i], dtype=torch.long), torch.tensor(self.targets[i], dtype=torch.long)


__all__ = ["CachedFeatures", "FrozenPrefix"]
