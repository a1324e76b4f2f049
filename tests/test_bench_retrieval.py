"""pvlm-bench-search: generated queries say their facts, the scores and the CLI's common options."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.quality import attribute_label
from bench.retrieval import FACTS, make_queries, run_scale
from runtime.attributes import parse_attributes


def _truth(n: int, seed: int) -> list[dict[str, str]]:
    import numpy as np

    from pvlm.synth import sample_attributes

    rng = np.random.default_rng(seed)
    return [sample_attributes(rng) for _ in range(n)]


def test_queries_parse_back_to_their_facts():
    truth = _truth(200, 3)
    for q in make_queries(truth, 300, seed=5):
        parsed = parse_attributes(q.text)
        for key, value in q.facts.items():
            assert attribute_label(key, parsed[key]) == attribute_label(key, value), (q.text, key)


def test_attribute_accuracy_counts_none_and_lists_alike():
    from bench.retrieval import _attribute_accuracy

    truth = [{f: "none" if f in ("headwear", "carrying") else "x" for f in FACTS}]
    truth[0].update(gender="male", upper="jacket", upper_color="red", carrying="backpack", headwear="none")
    acc = _attribute_accuracy(["a man in a red jacket carrying a backpack"], truth)
    assert acc["carrying"] == 1.0 and acc["headwear"] == 1.0 and acc["upper_color"] == 1.0
    assert acc["gender"] == 1.0 and acc["lower"] == 0.0


def test_scale_runs_small_and_closes_its_store(tmp_path):
    db = tmp_path / "s.db"
    res = run_scale(rows=1000, pool=100, n_queries=20, batch=250, path=str(db), seed=1, progress=False)
    assert res["rows"] == 1000 and res["db_bytes"] == db.stat().st_size > 0
    assert res["query_ms"]["p99"] >= res["query_ms"]["p50"] > 0
    again = run_scale(rows=1000, pool=100, n_queries=20, batch=250, path=None, seed=1, progress=False)
    assert again["slowest"] and again["rows"] == 1000
    before = db.read_bytes()
    reused = run_scale(rows=1000, pool=100, n_queries=20, batch=250, path=str(db), seed=1, progress=False, reuse=True)
    assert "ingest_s" not in reused and reused["query_ms"]["p50"] > 0 and db.read_bytes() == before


@pytest.mark.parametrize("args", [["-h"], ["--version"], ["retrieval", "-h"], ["scale", "--help"]])
def test_cli_common_options(args):
    out = subprocess.run([sys.executable, "-c", "from bench.retrieval import main; main()", *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert ("Usage" in out.stdout) or ("0." in out.stdout)


def test_cli_json_out_and_quiet(tmp_path):
    out = tmp_path / "r.json"
    res = subprocess.run([sys.executable, "-c", "from bench.retrieval import main; main()", "retrieval", "--n", "20",
                          "--queries", "10", "--batch-size", "4", "--json-out", str(out), "-q"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    assert data["crops"] == 20 and 0.0 <= data["ground_truth"]["precision@10"] <= 1.0
    # searched as typed (near-synonyms too) and exactly: the same recall, exact at least as precise
    exact = data["ground_truth_exact"]
    assert exact["recall@10"] == data["ground_truth"]["recall@10"]
    assert exact["precision@10"] >= data["ground_truth"]["precision@10"]
    assert "{" not in res.stdout  # -q: the table only
    bad = subprocess.run([sys.executable, "-c", "from bench.retrieval import main; main()", "retrieval",
                          "--batch", "4"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--batch" in bad.stderr
