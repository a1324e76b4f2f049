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


@pytest.mark.parametrize("size", [(96, 96), (64, 32), (100, 60)], ids=["12-6-3", "8-4-2", "interpolated"])
def test_rank5_layout_gives_timms_features(backbone, size):
    """The CoreML layout (no tensor above rank 5) against timm's own blocks, PyTorch on both sides."""
    from export.mobilevit import patch_mobilevit_blocks

    patched = copy.deepcopy(backbone)
    assert patch_mobilevit_blocks(patched, max_rank=5) == 3
    pixels = torch.randn(2, 3, *size)
    with torch.no_grad():
        torch.testing.assert_close(patched.forward_features(pixels), backbone.forward_features(pixels),
                                   atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="max_rank must be one of"):
        patch_mobilevit_blocks(patched, max_rank=4)


@pytest.mark.parametrize("max_rank", [6, 5])
def test_coreml_converts_the_rank5_block_only(backbone, max_rank):
    """With a flexible batch, Core ML refuses the rank-6 unfold ("rank <= 5") and converts the rank-5 one."""
    pytest.importorskip("coremltools", reason="coremltools is not installed (pip install 'coremltools>=9')")
    from export.coreml import _coremltools
    from export.mobilevit import patch_mobilevit_blocks

    ct = _coremltools()
    block = copy.deepcopy(backbone.stages[2][1])
    patch_mobilevit_blocks(block, max_rank=max_rank)
    x = torch.randn(2, block.conv_kxk.conv.in_channels, 12, 12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(block, (x,))
        convert = lambda: ct.convert(  # noqa: E731
            traced, inputs=[ct.TensorType(name="x", shape=(ct.RangeDim(1, 8, default=1), *x.shape[1:]))],
            convert_to="mlprogram", minimum_deployment_target=ct.target.macOS13, skip_model_load=True)
        if max_rank == 6:
            with pytest.raises(ValueError, match="rank <= 5"):
                convert()
            return
        program = convert()._mil_program.functions["main"]
    assert max(v.rank for op in program.operations for v in op.outputs) <= 5
