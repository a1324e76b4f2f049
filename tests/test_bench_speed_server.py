"""``pvlm-bench --server URL --concurrency ...`` against a real pvlm-serve on loopback (HTTP and gRPC)."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("pytriton", reason="pvlm-serve needs nvidia-pytriton (pip install -e '.[serve]')")
pytest.importorskip("tritonclient.grpc", reason="the load mode uses tritonclient[grpc,http] (pip install -e '.[serve]')")

from test_export_triton import free_ports, lively_bundle  # noqa: E402,F401 - helper and the session bundle fixture

from bench.cli_speed import main as bench_main  # noqa: E402


@pytest.fixture(scope="module")
def server(lively_bundle, tmp_path_factory):  # noqa: F811 - the fixture imported above
    """``runtime.serving.server.serve`` in this process on free loopback ports."""
    from runtime.serving.server import serve

    http, grpc, metrics = free_ports(3)
    triton = serve(lively_bundle, host="127.0.0.1", http_port=http, grpc_port=grpc, metrics_port=metrics,
                   max_batch=8, queue_delay_ms=5, backend="onnxruntime-cpu", exit_timeout_s=5,
                   log_file=tmp_path_factory.mktemp("pytriton") / "tritonserver.log")
    try:
        yield {"http": f"http://127.0.0.1:{http}", "grpc": f"grpc://127.0.0.1:{grpc}"}
    finally:
        triton.stop()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_levels_report_latency_and_throughput(server, protocol, tmp_path):
    out = tmp_path / "load.csv"
    res = CliRunner().invoke(bench_main, ["--server", server[protocol], "--concurrency", "1", "4", "--requests", "12",
                                          "-q", "--json", "--csv", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["protocol"] == protocol and list(report["results"]) == ["1", "4"]
    for c, r in report["results"].items():
        assert r["errors"] == 0, r["first_error"]
        assert r["concurrency"] == int(c) and r["requests"] == 12 and r["answered"] == 12
        assert r["latency_ms_p50"] > 0 and r["images_per_s"] > 0
        assert r["latency_ms_p90"] is not None and r["latency_ms_p99"] is None  # 12 answers: p90 yes, p99 no
    rows = list(csv.DictReader(out.open()))
    assert [r["concurrency"] for r in rows] == ["1", "4"] and all(r["latency_ms_p99"] == "" for r in rows)


def test_table_says_why_p99_is_missing(server):
    res = CliRunner().invoke(bench_main, ["--server", server["http"], "--concurrency", "2", "--requests", "4", "-q"])
    assert res.exit_code == 0, res.output
    assert "concurrency" in res.stdout and "p99 needs >= 100 answered requests (have 4" in res.stdout


@pytest.mark.parametrize("url, needle", [
    ("ftp://127.0.0.1:1", "expected http://HOST:PORT"),
    ("http://127.0.0.1:{closed}", "no pvlm-serve answering"),
])
def test_bad_server_exit_2(url, needle):
    (closed,) = free_ports(1)
    res = CliRunner().invoke(bench_main, ["--server", url.format(closed=closed), "--concurrency", "1", "-q"])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error:") and needle in res.stderr
