"""Encoder at batch 32 in one call vs in chunks (shared pool, spinning like pvlm-bench).

python docs/notes/scripts/encoder_chunks.py BUNDLE encoder.onnx,encoder.int8.onnx
"""
import sys, time, numpy as np, onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as C
C.set_global_thread_pool_sizes(0, 1)
bundle, B = sys.argv[1], 32
def sess(path):
    o = ort.SessionOptions(); o.use_per_session_threads = False; o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL; o.log_severity_level = 3
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
import json; m = json.load(open(f"{bundle}/manifest.json")); h, w = m["model"]["image_size"]
x = np.random.default_rng(0).standard_normal((B, 3, h, w)).astype(np.float32)
for f in sys.argv[2].split(","):
    s = sess(f"{bundle}/{f}")
    res = {}
    for chunk in (32, 16, 8, 4, 2, 1):
        for _ in range(2): [s.run(None, {"pixels": x[i:i + chunk]}) for i in range(0, B, chunk)]
        ts = []
        for _ in range(7):
            t = time.perf_counter(); [s.run(None, {"pixels": x[i:i + chunk]}) for i in range(0, B, chunk)]; ts.append(time.perf_counter() - t)
        res[chunk] = np.median(ts) * 1e3
    print(f, " ".join(f"b{c}:{v:.0f}ms" for c, v in res.items()), flush=True)
