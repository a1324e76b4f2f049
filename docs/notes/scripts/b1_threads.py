"""Batch-1 latency, side by side: decoder step on 2 threads (default) vs 1 thread; encoder as is. Wall clock, interleaved."""
import sys, time, statistics
import numpy as np
import runtime.backends.ort as o
from runtime import Describer
bundle = sys.argv[1]
iters = int(sys.argv[2]) if len(sys.argv) > 2 else 30
orig = o.SessionLoader._options

def make(step_threads):
    def opts(self, threads, shared, spin):
        if spin and step_threads and not shared:  # the per-step (decoder) options
            return orig(self, step_threads, shared, spin)
        return orig(self, threads, shared, spin)
    o.SessionLoader._options = opts
    d = Describer(bundle, backend="onnxruntime-cpu", verify=False)
    o.SessionLoader._options = orig
    return d

cands = {"default": make(None), "decoder 1 thread": make(1)}
rng = np.random.default_rng(0)
b = cands["default"]
h, w = 224, 224
import json, pathlib
pre = json.loads((pathlib.Path(bundle) / "manifest.json").read_text())["preprocess"]
h, w = pre.get("height", 224), pre.get("width", 224)
px = rng.standard_normal((1, 3, h, w)).astype(np.float32)
times = {k: [] for k in cands}
for k, d in cands.items():
    d.generate_ids(px, 48)
for i in range(iters):
    for k, d in cands.items():
        t = time.perf_counter(); ids, _ = d.generate_ids(px, 48); times[k].append(time.perf_counter() - t)
for k, v in times.items():
    print(f"{k}: median {statistics.median(v) * 1000:.1f} ms, p10 {np.percentile(v, 10) * 1000:.1f}, p90 {np.percentile(v, 90) * 1000:.1f} ({len(ids[0])} tokens)")
