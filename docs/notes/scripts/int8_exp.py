"""Which INT8 encoder plan keeps the trained lite0 model's attributes? (FP32 decoder_ort, vs the FP32 bundle)."""
import os
os.makedirs("/tmp/pvlm-notes", exist_ok=True)  # scratch bundles
import json, shutil, sys, tempfile
from pathlib import Path
import numpy as np
from export.int8 import quantize_encoder, calibration_images, head_nodes
from export.variants import VariantOptions
from export.validate import parity_images
from pvlm.checkpoint import load_checkpoint
from runtime import Describer
from runtime.describer import detokenize
from runtime.attributes import parse_attributes
from runtime.bundle import sha256_path

src = Path(os.environ.get("PVLM_BUNDLE", "runs/quickstart/bundle"))
model = load_checkpoint(os.environ.get("PVLM_CKPT", "runs/quickstart/train/best.pt"))[0]
n = 64
pixels = parity_images(model, n + n // 3 + 1, seed=1)[:n]  # crops only
ref = Describer(src, backend="onnxruntime-cpu", verify=False)
itos = ref.bundle.tokens
want = []
for s in range(0, n, 16):
    want += ref.generate_ids(pixels[s:s + 16], 48)[0]
import onnxruntime as ort
fp32 = ort.InferenceSession(str(src / "encoder.onnx"), providers=["CPUExecutionProvider"])
ck32 = fp32.run(None, {"pixels": pixels[:16]})[0]

def agree(got):
    same = tot = 0
    for g, w in zip(got, want):
        a, b = parse_attributes(detokenize(g, itos)), parse_attributes(detokenize(w, itos))
        keys = [k for k in set(a) | set(b) if a.get(k) not in (None, []) or b.get(k) not in (None, [])]
        same += sum(a.get(k) == b.get(k) for k in keys); tot += len(keys)
    return same / max(tot, 1)

def run(label, **kw):
    work = Path("/tmp/pvlm-notes/icand"); shutil.rmtree(work, ignore_errors=True); shutil.copytree(src, work)
    images, _ = calibration_images(model, VariantOptions(calibration_images=kw.pop("ncal", 64)))
    info = quantize_encoder(src / "encoder.onnx", work / "encoder.int8.onnx", images, **kw)
    m = json.loads((work / "manifest.json").read_text())
    m["artifacts"]["encoder.int8.onnx"] = {"sha256": sha256_path(work / "encoder.int8.onnx"), "bytes": 1}
    m["variants"] = {"int8": {"graphs": {"encoder": "encoder.int8.onnx"}, "plan": {}}}
    (work / "manifest.json").write_text(json.dumps(m))
    q = ort.InferenceSession(str(work / "encoder.int8.onnx"), providers=["CPUExecutionProvider"])
    ck8 = q.run(None, {"pixels": pixels[:16]})[0]
    rel = np.abs(ck8 - ck32).max() / np.abs(ck32).max()
    d = Describer(work, backend="onnxruntime-cpu", precision="int8", verify=False)
    got = []
    for s in range(0, n, 16):
        got += d.generate_ids(pixels[s:s + 16], 48)[0]
    exact = sum(a == b for a, b in zip(got, want))
    print(f"{label}: exact {exact}/{n}, attributes {agree(got):.3f}, cross_k max rel err {rel:.3f}, {info['nodes_quantized']}", flush=True)

which = sys.argv[1:] or ["default", "conv", "conv_clip"]
for w in which:
    if w == "default": run("default plan")
    if w == "conv": run("Conv only", op_types=("Conv",))
    if w == "conv_clip": run("Conv+Clip+Add", op_types=("Conv", "Clip", "Add"))
import onnx
g = onnx.load(str(src / "encoder.onnx")).graph
def grp(n):
    return next((a.i for a in n.attribute if a.name == "group"), 1)
convs = [n for n in g.node if n.op_type == "Conv"]
dw = [n.name for n in convs if grp(n) > 1]
for w in which:
    if w == "nodw": run("Conv, depthwise FP32", op_types=("Conv",), nodes_to_exclude=dw)
    if w == "nostem": run("Conv, stem FP32", op_types=("Conv",), nodes_to_exclude=[convs[0].name])
    if w == "noexp":  # 1x1 convs with no activation after them (projections)
        run("Conv, only depthwise FP32 + stem", op_types=("Conv",), nodes_to_exclude=dw + [convs[0].name])
    if w == "rr":
        import export.int8 as e8, onnxruntime.quantization as oq
        orig = oq.quantize_static
        e8_q = lambda *a, **k: orig(*a, **{**k, "reduce_range": True})
        oq.quantize_static = e8_q
        run("Conv+Clip+Add reduce_range", op_types=("Conv", "Clip", "Add"))
        oq.quantize_static = orig
    if w == "pct":
        import onnxruntime.quantization as oq
        orig = oq.quantize_static
        oq.quantize_static = lambda *a, **k: orig(*a, **{**k, "calibrate_method": oq.CalibrationMethod.Percentile})
        run("Conv+Clip+Add percentile", op_types=("Conv", "Clip", "Add"))
        oq.quantize_static = orig
