"""CPU time (1 intra-op thread, process_time, median of 3) of the Describer per precision: robust to a shared machine."""
import sys, time
import numpy as np
from runtime import Describer
bundle = sys.argv[1]
precisions = sys.argv[2].split(",")
batches = [int(b) for b in sys.argv[3].split(",")]
ds = {p: Describer(bundle, backend="onnxruntime-cpu", precision=p, threads=1, verify=False) for p in precisions}
rng = np.random.default_rng(0)
from export.validate import parity_images
from pvlm.checkpoint import load_checkpoint
import json, pathlib
src = json.loads((pathlib.Path(bundle) / "manifest.json").read_text())["source"]["checkpoint"]
model = load_checkpoint(src)[0]
for b in batches:
    px = parity_images(model, b + b // 3 + 1, seed=5)[:b]
    res = {}
    for p in precisions:
        ds[p].generate_ids(px, 48)
    for p in precisions:
        ts = []
        for _ in range(3):
            t = time.process_time(); ds[p].generate_ids(px, 48); ts.append(time.process_time() - t)
        res[p] = sorted(ts)[1] * 1000
    base = res[precisions[0]]
    print(f"batch {b}: " + ", ".join(f"{p} {ms:.1f} ms ({base / ms:.2f}x)" for p, ms in res.items()), flush=True)
