"""Interleaved end-to-end greedy runs (48 tokens, fixed work) of several bundle/precision pairs in one process.

python docs/notes/scripts/ab_bundles.py BATCH RUNS BUNDLE:PRECISION [BUNDLE:PRECISION ...]
Each run is preceded by a batch-1 2-token call (like pvlm-bench's settle call); medians of RUNS.
"""
import sys, time, numpy as np
from runtime import Describer
B = int(sys.argv[1]); n = int(sys.argv[2]); pairs = [a.split(":") for a in sys.argv[3:]]
ds = {f"{b}:{p}": Describer(b, backend="onnxruntime-cpu", precision=p, verify=False, max_batch=max(B, 1), shared_threads=True) for b, p in pairs}
h, w = next(iter(ds.values())).bundle.model["image_size"]
x = np.random.default_rng(0).standard_normal((B, 3, h, w)).astype(np.float32)
for d in ds.values():
    for _ in range(2): d.generate_ids(x, 48, stop_at_eos=False)
res = {k: [] for k in ds}
for _ in range(n):
    for k, d in ds.items():
        d.generate_ids(x[:1], 2, stop_at_eos=False)  # settle, like pvlm-bench
        t = time.perf_counter(); _, tm = d.generate_ids(x, 48, stop_at_eos=False)
        res[k].append(((time.perf_counter() - t) * 1e3, tm["encode_ms"], tm["decode_ms"] / 48))
for k, r in res.items():
    a = np.median(np.array(r), axis=0)
    print(f"{k:34s} total {a[0]:7.1f}  encode {a[1]:6.1f}  step {a[2]:.3f}")
