"""The attribute heads at run time: the combination rule, abstention, and the encoder's cost of the extra output.

    python docs/notes/scripts/attribute_abstention.py rule BUNDLE DATA.jsonl
        describe DATA once (min_confidence 0), then re-combine the text's values and the heads' calibrated
        probabilities under several (fill, override) rules and abstention thresholds: accuracy, precision and
        coverage of the stated attributes over pvlm-eval's scored categories
    python docs/notes/scripts/attribute_abstention.py latency CKPT [BATCH] [RUNS]
        encoder.onnx with and without the heads' output (same weights), interleaved runs on one thread: median ms
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def rule_table(bundle: str, data: str) -> None:
    from bench.confidence import abstention_curve
    from bench.quality import (
        ATTRIBUTE_CATEGORIES,
        OPTIONAL_CATEGORIES,
        attribute_accuracy,
        expected_attributes,
    )
    from pvlm.data import load_jsonl
    from runtime import Describer
    from runtime.attribute_confidence import CombineRule, combine

    records = load_jsonl(data)
    with Describer(bundle, backend="onnxruntime-cpu") as d:
        described = [x for i in range(0, len(records), 32) for x in d.describe([r.image for r in records[i:i + 32]])]
    cats = list(ATTRIBUTE_CATEGORIES + OPTIONAL_CATEGORIES)
    truth = [expected_attributes(r.attributes, r.caption, cats) for r in records]
    expected = [{k: e[k][0] for k in cats} for e in truth]
    sources = [{k: e[k][1] for k in cats} for e in truth]
    texts = [x.attributes["text"] for x in described]
    probs = [x.attributes["probabilities"] for x in described]
    print(f"{len(records)} images; categories {', '.join(cats)}")
    print("text only: mean accuracy", round(attribute_accuracy(texts, expected, cats, sources)["mean"], 4))
    heads_only = [combine({k: None for k in t} | {"carrying": []}, p, CombineRule(fill=0.0, override=0.0))
                  for t, p in zip(texts, probs)]
    print("heads only: mean accuracy", round(attribute_accuracy(heads_only, expected, cats, sources)["mean"], 4))
    for fill, override in ((1.0, 1.0), (0.5, 1.0), (0.5, 0.9), (0.5, 0.8), (0.5, 0.7), (0.7, 0.9), (0.9, 0.95)):
        rule = CombineRule(fill=fill, override=override)
        combined = [combine(t, p, rule) for t, p in zip(texts, probs)]
        acc = attribute_accuracy(combined, expected, cats, sources)
        curve = {row["threshold"]: row for row in abstention_curve(combined, expected, sources, cats)}
        per = " ".join(f"{k}={v['accuracy']:.3f}" for k, v in acc["categories"].items() if v["n"])
        row = " | ".join(f"t={t:.2f} cov {c['coverage']:.3f} prec {c['precision']:.3f}" for t, c in curve.items()
                         if t in (0.0, 0.5, 0.8, 0.9, 0.95))
        print(f"fill {fill:.2f} override {override:.2f}: mean {acc['mean']:.4f} [{per}]\n    {row}")


def latency(checkpoint: str, batch: int = 32, runs: int = 30) -> None:
    import copy

    import onnxruntime as ort

    from export.graphs import EncoderGraph
    from export.onnx import export_graph
    from export.spec import graph_specs
    from pvlm.checkpoint import load_checkpoint

    model, _, _ = load_checkpoint(checkpoint)
    bare = copy.deepcopy(model)
    bare.attribute_heads = None
    bare.cfg = type(model.cfg)(**{**model.cfg.to_dict(), "attribute_heads": False})
    tmp = Path(tempfile.mkdtemp(prefix="pvlm-heads-"))
    sessions = {}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    for name, m in (("with heads", model.eval()), ("without", bare.eval())):
        spec = graph_specs(m.cfg)["encoder"]
        export_graph(EncoderGraph(m), spec, tmp / f"{name}.onnx", 20, m.cfg, 48)
        sessions[name] = ort.InferenceSession(str(tmp / f"{name}.onnx"), opts, providers=["CPUExecutionProvider"])
    h, w = model.cfg.image_size
    x = np.random.default_rng(0).standard_normal((batch, 3, h, w)).astype(np.float32)
    times: dict[str, list[float]] = {n: [] for n in sessions}
    for s in sessions.values():
        s.run(None, {"pixels": x})
    for _ in range(runs):  # interleaved: load from other jobs hits both alike
        for name, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, {"pixels": x})
            times[name].append((time.perf_counter() - t0) * 1e3)
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=4)
        print(f"{name:<11} batch {batch}: median {statistics.median(ts):.1f} ms (quartiles {q[0]:.1f}-{q[2]:.1f}, "
              f"{runs} runs, 1 thread)")
    ratio = [a / b for a, b in zip(times["with heads"], times["without"])]
    print(f"ratio with/without: median {statistics.median(ratio):.4f}")


if __name__ == "__main__":
    if sys.argv[1] == "rule":
        rule_table(sys.argv[2], sys.argv[3])
    else:
        latency(sys.argv[2], *(int(a) for a in sys.argv[3:5]))
