"""Where a decoder step's time goes: ONNX Runtime's profiler per op type over a whole greedy run.

usage: python docs/notes/scripts/step_profile.py BUNDLE fp32|int8 BATCH
Runs the Describer (up to 48 new tokens; a batch stops once every sequence has ended) with
profiling switched on for every session it opens, and prints kernel time per op type per graph.
"""
import collections
import json
import os
import sys

import numpy as np
import onnxruntime as ort

from runtime import Describer

bundle, precision, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.makedirs("/tmp/pvlm-notes", exist_ok=True)
sessions = []
_Session = ort.InferenceSession


class Profiled(_Session):
    def __init__(self, path, sess_options=None, *args, **kwargs):
        sess_options = sess_options or ort.SessionOptions()
        sess_options.enable_profiling = True
        sess_options.profile_file_prefix = f"/tmp/pvlm-notes/step_{os.path.basename(str(path))}"
        super().__init__(path, sess_options, *args, **kwargs)
        sessions.append((str(path), self))


ort.InferenceSession = Profiled
d = Describer(bundle, backend="onnxruntime-cpu", precision=precision, verify=False)
h, w = d.bundle.manifest.preprocess["height"], d.bundle.manifest.preprocess["width"]
pixels = np.random.default_rng(0).standard_normal((batch, 3, h, w)).astype(np.float32)
runs = 3
for _ in range(runs):
    ids, _ = d.generate_ids(pixels, 48)
steps = sum(len(s) for s in ids) / batch
for path, s in sessions:
    f = s.end_profiling()
    by, total = collections.Counter(), 0
    for e in json.load(open(f)):
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by[e["args"].get("op_name")] += e["dur"]
            total += e["dur"]
    os.remove(f)
    print(f"{os.path.basename(path)} batch {batch}: {total / runs / 1000:.1f} ms in kernels per run "
          f"(about {steps:.0f} tokens a sequence)")
    for op, dur in by.most_common(8):
        print(f"  {op:32s} {dur / runs / 1000:7.2f} ms  {100 * dur / max(total, 1):5.1f}%")
