"""export/mobilevit.py: timm's MobileViT block with cheaper layout moves, same numbers."""

from __future__ import annotations

import copy
import io
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return timm.create_model("mobilevit_xxs", pretrained=False, num_classes=0).eval()


def test_patched_backbone_gives_the_same_features(backbone):
    from export.mobilevit import patch_mobilevit_blocks

    patched = copy.deepcopy(backbone)
    assert patch_mobilevit_blocks(patched) == 3
    # 96x96: the blocks see 12x12, 6x6 and 3x3 maps; 3x3 is interpolated to the 2x2 patch grid and back
    pixels = torch.randn(3, 3, 96, 96)
    with torch.no_grad():
        want, got = backbone.forward_features(pixels), patched.forward_features(pixels)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert patch_mobilevit_blocks(torch.nn.Linear(2, 2)) == 0  # other modules untouched


def _transposes(block, x) -> tuple[list[list[int]], bytes]:
    """Every Transpose's permutation in the block's ONNX graph, and the graph."""
    import onnx

    f = io.BytesIO()
    with warnings.catch_warnings():  # the tracer's notes on shape arithmetic
        warnings.simplefilter("ignore")
        torch.onnx.export(block, (x,), f, input_names=["x"], dynamo=False, dynamic_axes={"x": {0: "batch"}})
    model = onnx.load_from_string(f.getvalue())
    nodes = [n for n in model.graph.node if n.op_type == "Transpose"]
    return [list(a.ints) for n in nodes for a in n.attribute if a.name == "perm"], f.getvalue()


def test_exported_block_avoids_the_patch_axis_swap(backbone):
    """timm's unfold/fold swap axes 1 and 3 of (B, C, N, P), which ONNX Runtime's CPU Transpose does
    slowly; the patched block's graph has no such swap and ONNX Runtime gives the same output."""
    ort = pytest.importorskip("onnxruntime")
    from export.mobilevit import patch_mobilevit_blocks

    block = backbone.stages[2][1]
    patched = copy.deepcopy(block)
    patch_mobilevit_blocks(patched)
    x = torch.randn(2, block.conv_kxk.conv.in_channels, 12, 12)
    swap = [0, 3, 2, 1]
    timm_perms, _ = _transposes(block, x)
    perms, graph = _transposes(patched, x)
    assert swap in timm_perms and swap not in perms
    assert [0, 2, 3, 1] in perms and [0, 3, 1, 2] in perms  # one NCHW <-> NHWC move each way
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        xb = torch.randn(batch, *x.shape[1:])
        with torch.no_grad():
            want = block(xb).numpy()
        np.testing.assert_allclose(session.run(None, {"x": xb.numpy()})[0], want, atol=1e-4)
