"""How many held-out descriptions change with the repetition guard, and what a plain red rectangle gives.

    python docs/notes/scripts/repetition_guard.py BUNDLE DATA.jsonl

Per decoding (greedy, beams 3, sampling at the original repository's settings, seed 0) and guard size
(0, 3, 4, 6, 10): descriptions that differ from the unguarded ones, and the red rectangle's description.
"""
import json
import sys
from pathlib import Path

from PIL import Image

from runtime import Describer
from runtime.decoding import DecodingOptions

bundle, data = sys.argv[1], Path(sys.argv[2])
rows = [json.loads(l) for l in data.read_text().splitlines() if l.strip()]
images = [Image.open(data.parent / r["image"]).convert("RGB") for r in rows]
red = Image.new("RGB", (64, 128), (220, 20, 20))
sizes = (0, 3, 4, 6, 10)
with Describer(bundle, backend="onnxruntime-cpu", max_batch=32) as d:
    for label in ("greedy", "beams3", "original"):
        base = None
        for n in sizes:
            opts = DecodingOptions.parse(label, no_repeat_ngram_size=n)
            texts = [x.text for x in d.describe(images, decoding=opts)]
            base = texts if base is None else base
            changed = sum(a != b for a, b in zip(texts, base))
            r = d.describe([red], decoding=opts)[0]
            print(f"{label:8s} n={n:2d} changed {changed:3d}/{len(texts)}  red rectangle: {len(r.tokens)} tokens: {r.text[:110]!r}", flush=True)
