"""The two exported graphs as thin modules over :class:`pvlm.PersonVLM`.

Cache representation (the choice the TensorRT build depends on): the self-attention cache
is PREALLOCATED to a capacity ``S`` (the ``cache`` dimension, >= 1) and every step takes
each row's ``position``. Slots ``j < position`` are attended to, the rest are masked with a
finite -1e4 (FP16-safe), and the step's own K/V are attended to directly and returned as
``new_k``/``new_v`` (L, B, H, 1, Dh) for the runtime to store at slot ``position``.

Why: the first step needs no zero-length cache (TensorRT rejects 0-sized profile dims),
there is no ONNX ``If`` (merged with/without-past decoders do not build in TensorRT), no
per-step concat/scatter copies the cache inside the graph, and the step's work is one
token's plus one read of the cache. The capacity is checked by the caller (runtime and
validation): ``position < S`` for every step, else the output would be silently wrong.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from pvlm.model import PersonVLM

from .mobilevit import patch_mobilevit_blocks


class EncoderGraph(nn.Module):
    """pixels (B, 3, H, W) -> cross_k, cross_v (L, B, H, N, Dh): all the decoder needs from an image; and with
    attribute heads, ``attributes`` (B, values): each head field's softmax side by side, in ``HEAD_FIELDS`` order.

    Works on a copy of the model whose MobileViT blocks move tensors the way ONNX Runtime does fast. The heads
    pool the same visual tokens (one query per field, a few hundred FLOPs per crop); the graph gives uncalibrated
    probabilities and the manifest's temperatures calibrate them at run time.
    """

    def __init__(self, model: PersonVLM):
        super().__init__()
        self.model = copy.deepcopy(model)
        patch_mobilevit_blocks(self.model)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        visual = self.model.encode_image(pixels)
        cross_k, cross_v = self.model.cross_kv(visual)
        if self.model.attribute_heads is None:
            return cross_k, cross_v
        return cross_k, cross_v, attribute_probabilities(self.model, visual)


def attribute_probabilities(model: PersonVLM, visual: torch.Tensor) -> torch.Tensor:
    """Visual tokens (B, N, D) -> every head field's softmax, concatenated: (B, values); the encoder's third output."""
    return torch.cat([logits.softmax(-1) for logits in model.attribute_heads(visual)], dim=-1)


class DecoderStepGraph(nn.Module):
    """One greedy step: logits, argmax ids and this token's K/V (see the module docstring).

    Works on a copy of the model whose attention scale is folded into the query weights.
    """

    def __init__(self, model: PersonVLM):
        super().__init__()
        self.model = copy.deepcopy(model)
        for blk in self.model.blocks:
            blk.attn.fold_scale()
            blk.cross.fold_scale()

    def forward(
        self, tokens: torch.Tensor, positions: torch.Tensor, cross_k: torch.Tensor, cross_v: torch.Tensor,
        cache_k: torch.Tensor, cache_v: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, new_k, new_v = self.model.decode_step(tokens, positions, cross_k, cross_v, cache_k, cache_v)
        return logits, logits.argmax(-1), new_k, new_v
