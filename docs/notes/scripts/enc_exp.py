"""Which encoder nodes must stay FP32 for the trained lite0 model's greedy sequences to survive FP16?

Reference: the FP32 bundle's own greedy ids (identical to PyTorch: 32/32 at export).
"""
import os
os.makedirs("/tmp/pvlm-notes", exist_ok=True)  # scratch bundles
import json, shutil, sys
from pathlib import Path
import onnx
from export.fp16 import convert_fp16
from export.precision_plan import fp32_nodes
from export.validate import parity_images
from pvlm.checkpoint import load_checkpoint
from runtime import Describer
from runtime.bundle import sha256_path

src = Path(os.environ.get("PVLM_BUNDLE", "runs/quickstart/bundle"))
model = load_checkpoint(os.environ.get("PVLM_CKPT", "runs/quickstart/train/best.pt"))[0]
n = 64
pixels = parity_images(model, n, seed=1)
ref = Describer(src, backend="onnxruntime-cpu", verify=False)
want = []
for s in range(0, n, 16):
    want += ref.generate_ids(pixels[s:s + 16], 48)[0]

enc = onnx.load(str(src / "encoder.onnx"))
nodes = list(enc.graph.node)
for i, nd in enumerate(nodes):
    if not nd.name:
        nd.name = f"{nd.op_type}_{i}"
last_conv = max(i for i, nd in enumerate(nodes) if nd.op_type == "Conv")
conv_idx = [i for i, nd in enumerate(nodes) if nd.op_type == "Conv"]

def run(label, extra):
    work = Path("/tmp/pvlm-notes/cand")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(src, work)
    # convert_fp16 blocks the plan; add extra names by patching the plan function's output
    import export.fp16 as f
    orig = f.fp32_nodes
    def plan(model, rules):
        p = orig(model, rules)
        from export.precision_plan import Fp32Node
        have = {x.name for x in p}
        return p + [Fp32Node(nd.name, nd.op_type, tuple(nd.output), "exp") for nd in model.graph.node if nd.name in extra and nd.name not in have]
    f.fp32_nodes = plan
    f.convert_fp16(src / "encoder.onnx", work / "encoder.fp16.onnx")
    f.fp32_nodes = orig
    m = json.loads((work / "manifest.json").read_text())
    m["artifacts"]["encoder.fp16.onnx"] = {"sha256": sha256_path(work / "encoder.fp16.onnx"), "bytes": (work / "encoder.fp16.onnx").stat().st_size}
    m["variants"] = {"fp16": {"graphs": {"encoder": "encoder.fp16.onnx"}, "plan": {}}}
    (work / "manifest.json").write_text(json.dumps(m))
    d = Describer(work, backend="onnxruntime-cpu", precision="fp16", verify=False)
    got = []
    for s in range(0, n, 16):
        got += d.generate_ids(pixels[s:s + 16], 48)[0]
    exact = sum(a == b for a, b in zip(got, want))
    print(f"{label}: {exact}/{n}", flush=True)

names = [nd.name for nd in nodes]
run("plan only", set())
run("after last conv FP32 (projector, K/V)", set(names[last_conv + 1:]))
for frac in (0.9, 0.75, 0.5):
    k = conv_idx[int(len(conv_idx) * frac)]
    run(f"from conv {int(len(conv_idx)*frac)}/{len(conv_idx)} on FP32", set(names[k:]))
run("first half FP32 only", set(names[:conv_idx[len(conv_idx)//2]]))
