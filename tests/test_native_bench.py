"""``pvlm-bench --backend onnxruntime-cpu native-cpu``: both rows in one run, on the same inputs, same tokens."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

pytest.importorskip("onnxruntime")


def test_bench_reports_python_and_native_rows(tiny_bundle):
    from bench.cli_speed import main
    from runtime.native.compile import BuildUnavailable, build

    try:
        build("release")
    except BuildUnavailable as e:
        pytest.skip(f"native runtime not built: {e}")
    res = CliRunner().invoke(main, [str(tiny_bundle), "--backend", "onnxruntime-cpu", "native-cpu", "--batch-size",
                                    "1", "4", "--iters", "2", "--warmup", "0", "--new-tokens", "8", "--gap", "0",
                                    "--threads", "1", "--json", "-q"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert set(report["results"]) == {"onnxruntime-cpu", "native-cpu"}
    for batch in ("1", "4"):
        python, native = report["results"]["onnxruntime-cpu"][batch], report["results"]["native-cpu"][batch]
        assert native["tokens"] == python["tokens"] == [8 * int(batch)] * 2  # fixed work: 8 tokens per row
        assert native["latency_ms_p50"] > 0 and native["peak_rss_mb"] > 0
    comparisons = {c["batch"]: c for c in report["comparisons"]}
    assert comparisons[1]["backend"] == "native-cpu" and comparisons[1]["tokens_match"]
    assert comparisons[4]["throughput_x"] is not None
