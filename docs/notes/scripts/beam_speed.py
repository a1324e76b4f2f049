"""Greedy against beam search (3 beams) in one process, interleaved; optionally an older runtime/beam.py too.

    python docs/notes/scripts/beam_speed.py BUNDLE BATCH fixed|natural [RUNS] [OLD_BEAM_PY]

OLD_BEAM_PY: a copy of an earlier runtime/beam.py (``git show 2418078:runtime/beam.py > /tmp/beam_old.py``), timed
on the same backend and inputs; the script checks that it returns the same tokens.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time

import numpy as np

from bench.speed import bench_inputs
from runtime import Describer
from runtime import beam as beam_now
from runtime.decoding import DecodingOptions


def _load_old(path: str):
    with open(path) as f:
        text = f.read().replace("from .decoding", "from runtime.decoding")
    spec = importlib.util.spec_from_loader("beam_old", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(text, path, "exec"), module.__dict__)  # noqa: S102 - a local measurement script
    return module


def main() -> None:
    bundle, batch, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    d = Describer(bundle, threads=2, max_batch=32, shared_threads=True)
    pre = d.bundle.preprocessing
    px = bench_inputs((pre.height, pre.width), batch, list(pre.mean), list(pre.std), 0)
    opts, n = DecodingOptions(beams=3), 48
    calls = {"greedy": lambda: d.generate_ids(px, n, stop_at_eos=mode == "natural"),
             "beams3 now": lambda: beam_now.beam_search(d.backend, px, d._bos, d._eos, n, opts)}
    if len(sys.argv) > 5:
        old = _load_old(sys.argv[5])
        calls["beams3 before"] = lambda: old.beam_search(d.backend, px, d._bos, d._eos, n, opts)
    times: dict[str, list[float]] = {k: [] for k in calls}
    tokens = {}
    for _ in range(runs):
        for name, call in calls.items():
            time.sleep(0.2)
            t0 = time.perf_counter()
            out = call()
            times[name].append(time.perf_counter() - t0)
            if name != "greedy":
                tokens[name] = [[h.tokens for h in x] for x in out[0]]
    base = np.median(times["greedy"])
    for name, t in times.items():
        print(f"{name:14s} median {np.median(t) * 1e3:8.1f} ms  ({np.median(t) / base:.2f}x greedy)")
    if len(tokens) > 1:
        print("same tokens before and now:", tokens["beams3 now"] == tokens["beams3 before"])
    print("load average", os.getloadavg())


if __name__ == "__main__":
    main()
