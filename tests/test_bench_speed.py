"""The benchmark harness checked on the tiny preset: structure, token counts, percentiles, CLI."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from bench import speed_report as rep
from bench.cli_speed import main as bench_main
from bench.speed import MIN_SAMPLES, BenchConfig, percentile, run_bench, tail_percentile

BACKENDS = ("torch-original", "torch-naive", "torch", "onnxruntime-cpu", "onnxruntime-cpu-portable")


@pytest.fixture(scope="module")
def fixed_report():
    cfg = BenchConfig(preset="tiny", backends=BACKENDS, batches=(1, 3), new_tokens=6, warmup=1, iters=3,
                      token_sweep=(4, 8), sweep_batch=2, progress=False, gap_s=0.0)
    return run_bench(cfg)


def test_report_structure_and_machine(fixed_report):
    assert set(fixed_report["results"]) == set(BACKENDS)
    for per in fixed_report["results"].values():
        assert set(per) == {"1", "3"}
    m = fixed_report["machine"]
    assert m["cores"] >= 1 and m["cpu"] and "onnxruntime" in m["libraries"] and "torch" in m["libraries"]
    assert fixed_report["model"]["backbone"] == "test_efficientnet"


def test_fixed_work_token_counts_match(fixed_report):
    for per in fixed_report["results"].values():
        for batch, r in per.items():
            assert r["tokens"] == [int(batch) * 6] * 3  # every iteration decoded exactly new_tokens per row
    for c in fixed_report["comparisons"]:
        assert c["tokens_match"] and c["throughput_x"] > 0 and c["latency_x"] > 0


def test_percentiles_ordered_and_rates_consistent(fixed_report):
    for per in fixed_report["results"].values():
        for batch, r in per.items():
            assert r["iters"] == 3 and r["latency_ms_p50"] > 0
            assert r["latency_ms_p90"] is None and r["latency_ms_p99"] is None  # 3 runs: no tail to speak of
            assert r["images_per_s"] == pytest.approx(int(batch) / (r["latency_ms_p50"] / 1e3))
            assert r["encode_ms_p50"] > 0 and r["step_ms_p50"] > 0 and r["peak_rss_mb"] > 10


def test_token_sweep_and_renderings(fixed_report, tmp_path):
    assert [s["new_tokens"] for s in fixed_report["token_sweep"]] == [4, 8]
    assert all(s["step_ms_p50"] > 0 for s in fixed_report["token_sweep"])
    md = rep.markdown(fixed_report)
    assert "| onnxruntime-cpu | 3 | 3 |" in md and "p99 needs >= 100 timed runs (have 3 per row" in md and "camera capacity" in md and "decoder ms/step" in md
    assert "onnxruntime-cpu vs torch-original @ batch 1" in "\n".join(rep.comparison_lines(fixed_report))
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib")
    rep.plot(fixed_report, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mismatched_token_counts_show_no_ratio():
    fake = {"config": {"descriptions_per_camera_s": 2.0},
            "results": {"a": {"1": {"tokens": [5], "images_per_s": 1.0, "latency_ms_p50": 1.0}},
                        "b": {"1": {"tokens": [4], "images_per_s": 2.0, "latency_ms_p50": 0.5}}}}
    from bench.speed import compare

    (c,) = compare(fake, BenchConfig(preset="tiny", backends=("a", "b"), batches=(1,)))
    assert c["tokens_match"] is False and c["throughput_x"] is None
    fake["comparisons"] = [c]
    assert "token counts differ" in rep.comparison_lines(fake)[0]


def test_run_result_marks_ended_rows_instead_of_a_fake_eos():
    from bench.speed_runners import RunResult, _rows_and_ends

    eos, pad = 2, 0
    ids = [[5, 6, eos, pad], [7, 8, 9, 10], [eos, pad, pad, pad]]
    rows, ended = _rows_and_ends(ids, eos, pad, stop_at_eos=True)
    assert rows == [[5, 6], [7, 8, 9, 10], []] and ended == [True, False, True]
    assert RunResult(rows, ended, 1.0, 1.0, 4).n_tokens == 3 + 4 + 1  # each EOS counted once
    rows, ended = _rows_and_ends(ids, eos, pad, stop_at_eos=False)  # fixed work: every id, EOS and padding too
    assert rows == ids and ended == [False] * 3 and RunResult(rows, ended, 1.0, 1.0, 4).n_tokens == 12


def test_percentile_matches_definition():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5.0], 99) == 5.0


def test_tail_percentiles_need_enough_runs():
    values = [float(i) for i in range(1, 101)]
    assert tail_percentile(values[:MIN_SAMPLES[99] - 1], 99) is None
    assert tail_percentile(values, 99) == pytest.approx(99.01)
    assert tail_percentile(values[:10], 90) == pytest.approx(9.1)


def test_natural_mode_backends_agree(tiny_bundle, tiny_checkpoint):
    r = run_bench(BenchConfig(bundle=str(tiny_bundle), checkpoint=str(tiny_checkpoint),
                              backends=("torch", "torch-original", "onnxruntime-cpu", "onnxruntime-cpu-portable"),
                              batches=(2,), new_tokens=8, natural=True, warmup=0, iters=1, progress=False, gap_s=0.0))
    tokens = {name: per["2"]["tokens"] for name, per in r["results"].items()}
    assert len(set(map(tuple, tokens.values()))) == 1, tokens


def test_cli_multi_value_options_json_and_csv(tiny_bundle, tiny_checkpoint, tmp_path):
    out, table = tmp_path / "r.json", tmp_path / "r.csv"
    res = CliRunner().invoke(bench_main, [str(tiny_bundle), "--checkpoint", str(tiny_checkpoint), "--backend", "torch",
                                          "onnxruntime-cpu", "--batch-size", "1", "2", "--new-tokens", "4", "--iters",
                                          "1", "--warmup", "0", "--quiet", "--json-out", str(out), "--csv", str(table)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert set(data["results"]["onnxruntime-cpu"]) == {"1", "2"} and "onnxruntime-cpu vs torch" in res.output
    import csv

    rows = list(csv.DictReader(table.open()))
    assert [(r["backend"], r["batch"]) for r in rows] == [("torch", "1"), ("torch", "2"), ("onnxruntime-cpu", "1"),
                                                          ("onnxruntime-cpu", "2")]
    assert all(float(r["latency_ms_p50"]) > 0 and r["latency_ms_p99"] == "" and r["runs"] == "1" for r in rows)


def test_cli_json_to_stdout_and_deprecated_batch(tiny_bundle):
    res = CliRunner().invoke(bench_main, [str(tiny_bundle), "--backend", "onnxruntime-cpu", "--batch",
                                                          "2", "--new-tokens", "2", "--iters", "1", "--warmup", "0",
                                                          "-q", "--json", "--gap", "0.05"])
    assert res.exit_code == 0, res.output + res.stderr
    report = json.loads(res.stdout)
    assert set(report["results"]["onnxruntime-cpu"]) == {"2"} and report["config"]["gap_s"] == 0.05
    assert "--batch is deprecated" in res.stderr


@pytest.mark.parametrize("args, needle", [
    (["--batch-size", "0"], "--batch-size"),
    (["/nonexistent/bundle"], "bundle"),
    (["--batch-size", "64"], "max batch"),
    (["--gap", "-1"], "--gap"),
])
def test_cli_bad_input_exit_2(args, needle, tiny_bundle):
    if args[0] in ("--batch-size", "--gap"):
        args = [str(tiny_bundle), *args, "--backend", "onnxruntime-cpu"]
    res = CliRunner().invoke(bench_main, [*args, "--quiet", "--iters", "1"])
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error:") and needle in res.output


_FAST_ROW = """
import sys
import numpy as np
from bench.speed_runners import RuntimeRunner

lean = RuntimeRunner(sys.argv[1], "onnxruntime-cpu", None, 4, 8)
fast = RuntimeRunner(sys.argv[1], "onnxruntime-cpu-fast", None, 4, 8)
try:
    assert (lean.describer.backend.memory, fast.describer.backend.memory) == ("lean", "fast")
    assert fast.describer.backend.thread_pool == "shared" and fast.describer.max_batch == 4
    pre = lean.describer.bundle.preprocessing
    pixels = np.random.default_rng(0).standard_normal((3, 3, pre.height, pre.width)).astype(np.float32)
    assert lean.run(pixels, 6, False).tokens == fast.run(pixels, 6, False).tokens
finally:
    lean.close()
    fast.close()
print("ok")
"""


def test_fast_row_runs_onnx_runtimes_own_memory_settings(tiny_bundle):
    """In a child process: the runners use ONNX Runtime's process-wide thread pool, which would stay set for
    every later session of the test process."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", _FAST_ROW, str(tiny_bundle)], capture_output=True, text=True,
                         timeout=300, check=False)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_rows_per_decoding_in_one_run(tiny_bundle, tiny_checkpoint):
    """``--decoding greedy beams3 sample``: one row each per ONNX Runtime backend, compared with its greedy row."""
    cfg = BenchConfig(bundle=str(tiny_bundle), checkpoint=str(tiny_checkpoint), backends=("torch", "onnxruntime-cpu"),
                      decodings=("greedy", "beams3", "sample"), batches=(2,), new_tokens=6, warmup=0, iters=2,
                      progress=False, gap_s=0.0)
    report = run_bench(cfg)
    assert list(report["results"]) == ["torch", "onnxruntime-cpu", "onnxruntime-cpu+beams3", "onnxruntime-cpu+sample"]
    beams = report["results"]["onnxruntime-cpu+beams3"]["2"]
    assert beams["latency_ms_p50"] > 0 and all(0 < t <= 2 * 6 + 2 for t in beams["tokens"])
    by_row = {c["backend"]: c for c in report["comparisons"]}
    assert by_row["onnxruntime-cpu+beams3"]["baseline"] == "onnxruntime-cpu"
    assert by_row["onnxruntime-cpu+beams3"]["decoding"] == "beams3" and by_row["onnxruntime-cpu+beams3"]["throughput_x"] > 0
    assert by_row["onnxruntime-cpu"]["baseline"] == "torch" and by_row["onnxruntime-cpu"]["decoding"] is None
    lines = "\n".join(rep.comparison_lines(report))
    assert "onnxruntime-cpu+sample vs onnxruntime-cpu (greedy) @ batch 2: throughput" in lines
    assert "| onnxruntime-cpu+beams3 | 2 | 2 |" in rep.markdown(report)


def test_bad_decoding_label_is_one_line():
    res = CliRunner().invoke(bench_main, ["--preset", "tiny", "--decoding", "beam", "--backend", "onnxruntime-cpu"])
    assert res.exit_code == 2 and "--decoding" in res.output and "beamsN" in res.output
