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


def test_web_load_serves_every_request_through_read_workers(tmp_path):
    pytest.importorskip("uvicorn", reason="uvicorn is not installed (pip install '.[web]')")
    from bench.web_load import run_web

    db = tmp_path / "s.db"
    run_scale(rows=1000, pool=100, n_queries=20, batch=250, path=str(db), seed=1, progress=False)
    res = run_web(str(db), clients=3, requests=30, seed=0, browser=False, workers=2)
    assert res["requests"] == 30 and res["errors"] == 0 and res["workers"] == 2
    assert res["latency_ms"]["p99"] >= res["latency_ms"]["p50"] > 0 and res["server_took_ms"]["p50"] >= 0
    assert res["server_cpu_ms_per_request"] > 0 and res["client_cpu_ms_per_request"] > 0


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


def _description(text, alternatives=(), **probabilities):
    from runtime.describer import Alternative, Description

    attrs = parse_attributes(text)
    if probabilities:
        attrs["probabilities"] = probabilities
    return Description(text, [], attrs, alternatives=[Alternative(t, [], -0.1 * i, parse_attributes(t))
                                                      for i, t in enumerate([text, *alternatives])])


def test_index_descriptions_keeps_alternatives_and_probabilities_unless_asked():
    from bench.retrieval import index_descriptions

    described = [_description("a man in a coat", ["a woman in a coat"], gender={"male": 0.5, "female": 0.5}),
                 _description("a man in a cap", gender={"male": 0.9, "female": 0.1})]
    store = index_descriptions(described)
    assert [h.track for h in store.search("man")] == ["1", "0"]  # the surer man first
    assert [(h.track, h.alternative["rank"]) for h in store.search("woman")] == [("0", 1)]
    assert index_descriptions(described, alternatives=False).search("woman") == []
    assert [h.track for h in index_descriptions(described, probabilities=False).search("man")] == ["1", "0"]
    assert index_descriptions(described, probabilities=False).search("man")[0].match_confidence == {}


def test_retrieval_with_n_best_scores_every_store(tiny_bundle):
    pytest.importorskip("onnxruntime")
    from bench.retrieval import run_retrieval

    res = run_retrieval(str(tiny_bundle), n=12, n_queries=8, seed=3, batch=4, progress=False, n_best=2)
    for name in ("model", "model_beams2", "model_nbest2", "model_nbest2_exact", "model_nbest2_operator"):
        assert 0.0 <= res[name]["precision@10"] <= 1.0, name
    assert res["describe_beams2_s"] > 0 and 0.0 <= res["alternatives_per_crop"] <= 1.0


def test_cli_n_best_needs_a_bundle():
    bad = subprocess.run([sys.executable, "-c", "from bench.retrieval import main; main()", "retrieval",
                          "--n-best", "3"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--n-best needs --bundle" in bad.stderr
