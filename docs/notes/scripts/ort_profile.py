"""Where the time goes: ONNX Runtime's profiler per op type, for each graph of a bundle (precision given)."""
import json, sys, collections, os
import numpy as np, onnxruntime as ort
from runtime.bundle import Bundle
b = Bundle.load(sys.argv[1], verify=False)
precision, batch = sys.argv[2], int(sys.argv[3])
path = b.path("encoder", precision)
so = ort.SessionOptions(); so.enable_profiling = True; so.log_severity_level = 3
so.profile_file_prefix = f"/tmp/pvlm-notes/prof_{precision}_{batch}"
s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
inp = s.get_inputs()[0]
shape = [batch if isinstance(d, str) else d for d in inp.shape]
x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
for _ in range(4):
    s.run(None, {inp.name: x})
f = s.end_profiling()
ev = json.load(open(f))
by = collections.Counter(); total = 0
for e in ev:
    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
        op = e["args"].get("op_name"); by[op] += e["dur"]; total += e["dur"]
runs = 4
print(f"encoder {precision} batch {batch}: {total / runs / 1000:.1f} ms per run in kernels")
for op, d in by.most_common(10):
    print(f"  {op:24s} {d / runs / 1000:7.1f} ms  {100 * d / total:5.1f}%")
os.remove(f)
