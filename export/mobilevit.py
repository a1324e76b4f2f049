"""timm's MobileViT block, rewritten for export with the same arithmetic and cheaper layout moves.

timm turns a feature map into patch tokens with ``transpose(1, 3)`` on a tensor whose last
axis is the 2x2 patch (size 4). ONNX Runtime's CPU Transpose is slow on exactly that kind
of permutation (the innermost axis moves outward): on a (1, 96, 28, 28) map the unfold and
fold took 772 us, against 108 us for one NCHW -> NHWC move followed by a permutation that
keeps the channel axis innermost (32 images: 25.7 ms against 6.9 ms). The tokens come out
in timm's order, so the transformer and every weight stay as they are; export validation
checks the result against the unpatched PyTorch model.

That permutation moves a rank-6 tensor, which Core ML refuses ("only supports tensors with
rank <= 5"), so the CoreML export patches the blocks with ``max_rank=5``: the same token
order from two rank-5 permutations, the channel axis still innermost.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


Layout = Callable[[torch.Tensor, int, int, int, int], torch.Tensor]  # (x, ph, pw, nh, nw) -> x


def _unfold6(x: torch.Tensor, ph: int, pw: int, nh: int, nw: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * P, N, C) in timm's token order, through one rank-6 permutation."""
    c = x.shape[-1]
    return x.reshape(-1, nh, ph, nw, pw, c).permute(0, 2, 4, 1, 3, 5).reshape(-1, nh * nw, c)


def _fold6(x: torch.Tensor, ph: int, pw: int, nh: int, nw: int) -> torch.Tensor:
    """(B * P, N, C) -> (B, H, W, C); the inverse of :func:`_unfold6`."""
    c = x.shape[-1]
    return x.reshape(-1, ph, pw, nh, nw, c).permute(0, 3, 1, 4, 2, 5).reshape(-1, nh * ph, nw * pw, c)


def _unfold5(x: torch.Tensor, ph: int, pw: int, nh: int, nw: int) -> torch.Tensor:
    """:func:`_unfold6` with no tensor above rank 5: the row split first, then the column split."""
    c, w = x.shape[-1], nw * pw
    x = x.reshape(-1, nh, ph, w, c).permute(0, 2, 1, 3, 4)  # (B, ph, nh, W, C)
    x = x.reshape(-1, nh, nw, pw, c).permute(0, 3, 1, 2, 4)  # (B * ph, pw, nh, nw, C)
    return x.reshape(-1, nh * nw, c)


def _fold5(x: torch.Tensor, ph: int, pw: int, nh: int, nw: int) -> torch.Tensor:
    """:func:`_fold6` with no tensor above rank 5; the inverse of :func:`_unfold5`."""
    c, w = x.shape[-1], nw * pw
    x = x.reshape(-1, pw, nh, nw, c).permute(0, 2, 3, 1, 4)  # (B * ph, nh, nw, pw, C)
    x = x.reshape(-1, ph, nh, w, c).permute(0, 2, 1, 3, 4)  # (B, nh, ph, W, C)
    return x.reshape(-1, nh * ph, w, c)


def _block_forward(self: nn.Module, x: torch.Tensor, unfold: Layout, fold: Layout) -> torch.Tensor:
    """``timm.models.mobilevit.MobileVitBlock.forward`` with channel-innermost unfold and fold."""
    shortcut = x
    x = self.conv_1x1(self.conv_kxk(x))
    ph, pw = self.patch_size
    h, w = x.shape[-2:]
    new_h, new_w = math.ceil(h / ph) * ph, math.ceil(w / pw) * pw
    nh, nw = new_h // ph, new_w // pw
    interpolate = (new_h, new_w) != (h, w)
    if interpolate:
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
    # (B, C, H, W) -> (B, H, W, C) -> (B * P, N, C), timm's token order.
    x = unfold(x.permute(0, 2, 3, 1), ph, pw, nh, nw)
    x = fold(self.norm(self.transformer(x)), ph, pw, nh, nw).permute(0, 3, 1, 2)
    if interpolate:
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    x = self.conv_proj(x)
    if self.conv_fusion is not None:
        x = self.conv_fusion(torch.cat((shortcut, x), dim=1))
    return x


def _forward6(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _block_forward(self, x, _unfold6, _fold6)


def _forward5(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _block_forward(self, x, _unfold5, _fold5)


# max_rank -> forward; plain (self, x) functions, since torch.onnx.export fills in a forward's defaulted arguments
FORWARDS = {6: _forward6, 5: _forward5}


def patch_mobilevit_blocks(module: nn.Module, max_rank: int = 6) -> int:
    """Give every timm ``MobileVitBlock`` inside ``module`` the export forward; returns how many.

    ``max_rank``: the highest tensor rank the forward may use, 6 (ONNX) or 5 (Core ML).
    Patches instances in place (a second call replaces the first): call it on a copy of the
    model you train with.
    """
    from timm.models.mobilevit import MobileVitBlock

    if max_rank not in FORWARDS:
        raise ValueError(f"max_rank must be one of {sorted(FORWARDS)}, got {max_rank}")
    blocks = [m for m in module.modules() if type(m) is MobileVitBlock]
    for m in blocks:
        m.forward = types.MethodType(FORWARDS[max_rank], m)
    return len(blocks)
