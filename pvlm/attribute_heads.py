"""Training-only attribute heads: every drawn attribute classified straight from the visual tokens.

A caption carries each attribute in one or two of its ~25 tokens, so the caption loss alone sends
the visual side a thin signal about, say, the object in a hand. These heads add a direct one: one
learned query per attribute pools the visual tokens (attention over the grid, so a small object in
one cell is not averaged away) and a linear layer names the value. The decoder never reads them and
the exported graphs do not contain them; they shape what the visual tokens carry.

Targets: :mod:`pvlm.attribute_targets`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attribute_targets import HEAD_FIELDS, IGNORE


class AttributeHeads(nn.Module):
    """Visual tokens (B, N, D) -> one logit vector per :data:`HEAD_FIELDS` entry."""

    def __init__(self, d_model: int):
        super().__init__()
        self.query = nn.Parameter(torch.randn(len(HEAD_FIELDS), d_model) * 0.02)
        self.out = nn.ModuleList(nn.Linear(d_model, len(f.drawn)) for f in HEAD_FIELDS)

    def forward(self, visual: torch.Tensor) -> list[torch.Tensor]:
        weights = torch.einsum("fd,bnd->bfn", self.query, visual).mul(visual.shape[-1] ** -0.5).softmax(-1)
        pooled = torch.einsum("bfn,bnd->bfd", weights, visual)  # (B, fields, D)
        return [head(pooled[:, i]) for i, head in enumerate(self.out)]

    def loss(self, visual: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the fields that have any label in the batch; targets (B, fields)."""
        losses = [F.cross_entropy(logits, targets[:, i], ignore_index=IGNORE)
                  for i, logits in enumerate(self(visual)) if bool((targets[:, i] != IGNORE).any())]
        return torch.stack(losses).mean() if losses else visual.sum() * 0.0


__all__ = ["AttributeHeads"]
