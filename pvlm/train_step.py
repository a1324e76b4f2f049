"""One training step's loss: the caption loss plus the masked attribute-head loss, as a module DDP can wrap.

Attribute labels come per field, and imported datasets leave many unknown (``IGNORE``): each head is
trained on the records that know its field only, and a field nobody in the batch knows adds nothing. The
loss still touches every head (with weight zero where unknown), so DistributedDataParallel sees every
parameter used on every rank.

With several processes each rank's loss is scaled so that DDP's gradient average equals the gradient of
the one-process loss on the whole global batch: the caption loss is a mean over the global batch's tokens,
each head's loss a mean over the global batch's known labels (``counts``, summed over ranks beforehand).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attribute_targets import IGNORE
from .model import PersonVLM, lm_loss


def attribute_terms(logits: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-field cross-entropy summed over the known labels (F,), and the number of known labels (F,).

    ``targets`` (B, F) holds class indices or ``IGNORE``; unknown entries add zero loss and zero gradient.
    """
    known = targets != IGNORE
    sums = torch.stack([(F.cross_entropy(lg.float(), targets[:, i].clamp(min=0), reduction="none") * known[:, i]).sum()
                        for i, lg in enumerate(logits)])
    return sums, known.sum(0).to(sums.dtype)


def masked_mean(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mean over the fields with a known label of each field's mean loss (0, still in the graph, if none)."""
    has = (counts > 0).to(sums.dtype)
    return (sums / counts.clamp(min=1) * has).sum() / has.sum().clamp(min=1)


class TrainStep(nn.Module):
    """``forward(inputs, ids, targets, counts)`` -> (loss to backpropagate, caption loss, attribute loss or None).

    ``encode`` turns the inputs (pixels, or cached frozen-prefix features) into visual tokens; ``counts``:
    None for one process, else the global batch's (caption tokens, known labels per field) and ``world``.
    """

    def __init__(self, model: PersonVLM, encode: Any, label_smoothing: float, attribute_weight: float):
        super().__init__()
        self.model, self.encode = model, encode
        self.label_smoothing, self.attribute_weight = label_smoothing, attribute_weight
        self.heads = model.attribute_heads if attribute_weight > 0 else None

    def forward(self, inputs: torch.Tensor, ids: torch.Tensor, targets: torch.Tensor,
                counts: torch.Tensor | None = None, world: int = 1) -> tuple[torch.Tensor, torch.Tensor, Any]:
        visual = self.encode(inputs)
        logits = self.model.decode_visual(ids, visual)
        caption = lm_loss(logits, ids, self.model.cfg.pad_id, self.label_smoothing)
        loss = caption if counts is None else caption * local_tokens(ids, self.model.cfg.pad_id) * world / counts[0]
        if self.heads is None:
            return loss, caption, None
        sums, known = attribute_terms(self.heads(visual), targets)
        attr = masked_mean(sums, known)
        scaled = attr if counts is None else masked_mean(sums, counts[1:]) * world
        return loss + self.attribute_weight * scaled, caption, attr


def local_tokens(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """The number of caption target tokens in this batch (what ``lm_loss`` averages over)."""
    return (ids[:, 1:] != pad_id).sum()


__all__ = ["TrainStep", "attribute_terms", "local_tokens", "masked_mean"]
