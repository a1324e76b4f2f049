import os
os.makedirs("/tmp/pvlm-notes", exist_ok=True)  # scratch bundles
import sys, tempfile
from pathlib import Path
import numpy as np
sys.argv = ["x", "none"]
exec(open(os.path.join(os.path.dirname(__file__), "int8_exp.py")).read().split("which = sys.argv")[0])
from onnxruntime.quantization.qdq_loss_debug import (modify_model_output_intermediate_tensors, collect_activations,
    create_activation_matching, compute_activation_error)
from export.int8 import _Reader
images, _ = calibration_images(model, VariantOptions(calibration_images=64))
work = Path("/tmp/pvlm-notes/qdbg"); work.mkdir(exist_ok=True)
quantize_encoder(src / "encoder.onnx", work / "q.onnx", images, op_types=("Conv",))
modify_model_output_intermediate_tensors(str(src / "encoder.onnx"), str(work / "f_aug.onnx"))
modify_model_output_intermediate_tensors(str(work / "q.onnx"), str(work / "q_aug.onnx"))
class R(_Reader):
    def __iter__(self):
        return self
    def __next__(self):
        b = self.get_next()
        if b is None: raise StopIteration
        return b
fa = collect_activations(str(work / "f_aug.onnx"), R(pixels[:16]))
qa = collect_activations(str(work / "q_aug.onnx"), R(pixels[:16]))
m = create_activation_matching(qa, fa)
err = compute_activation_error(m)
import onnx
order = [o for n in onnx.load(str(src / "encoder.onnx")).graph.node for o in n.output]
rows = [(k, v.get("xmodel_err"), v.get("qdq_err")) for k, v in err.items()]
rows.sort(key=lambda r: order.index(r[0]) if r[0] in order else 1e9)
for k, x, q in rows:
    print(f"{k:40s} xmodel SQNR {x if x is None else float(np.mean(x)):.2f}  qdq SQNR {q if q is None else float(np.mean(q)):.2f}" if x is not None and q is not None else f"{k} {x} {q}")
