"""bench/gpu_check.py on a machine without a GPU: every step up to where it needs one, and the JSON report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]


def _has_gpu() -> bool:
    from export.trt import gpu_properties

    return gpu_properties() is not None


@pytest.mark.skipif(_has_gpu(), reason="an NVIDIA GPU is here: the check would run the GPU steps (minutes)")
def test_gpu_check_on_cpu_skips_what_needs_a_gpu(tiny_bundle, tmp_path):
    out = tmp_path / "report.json"
    res = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--bundle", str(tiny_bundle), "--out", str(out),
                          "--work", str(tmp_path / "work")], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(out.read_text())
    assert report["format"] == "pvlm-gpu-check" and report["version"] == 1
    steps = {s["name"]: s for s in report["steps"]}
    label = str(tiny_bundle)
    assert list(steps) == ["environment", "pytest", *(f"{label}: {n}" for n in (
        "bundle", "ort-cuda", "trt-build", "trt-parity", "tensorrt-rtx-ep", "bench"))]
    assert steps["environment"]["status"] == "passed" and report["environment"]["has_gpu"] is False
    assert "onnxruntime" in report["environment"]["packages"]
    assert steps[f"{label}: bundle"]["status"] == "passed"
    skipped = report["summary"]["skipped_steps"]
    assert set(skipped) == set(steps) - {"environment", f"{label}: bundle"}
    assert report["summary"]["failed"] == 0
    pytest_reason = skipped["pytest"]
    assert pytest_reason.startswith("no NVIDIA GPU: ") and int(pytest_reason.split()[3]) > 0  # tests selected
    assert "CUDAExecutionProvider" in skipped[f"{label}: ort-cuda"]
    assert "cannot build TensorRT engines here" in skipped[f"{label}: trt-build"]
    assert skipped[f"{label}: trt-parity"].startswith("no TensorRT engines")
    assert "onnxruntime-ep-nv-tensorrt-rtx" in skipped[f"{label}: tensorrt-rtx-ep"]
    assert skipped[f"{label}: bench"].startswith("no GPU backend here")
    assert "0 failed" in res.stdout


def test_budget_spent_skips_the_remaining_steps(tiny_bundle, tmp_path):
    from bench.gpu_check import run_check

    report = run_check((), (tiny_bundle,), budget_s=1, work=tmp_path)
    steps = {s["name"]: s for s in report["steps"]}
    assert steps["environment"]["status"] == "passed"
    assert all(s["status"] == "skipped" and s["reason"].startswith("time budget spent")
               for name, s in steps.items() if name != "environment")


def test_junit_report_parsing():
    from bench.gpu_check import parse_junit

    xml = """<testsuites><testsuite name="pytest" tests="3">
      <testcase classname="tests.test_export_trt" name="test_a"/>
      <testcase classname="tests.test_export_trt" name="test_b"><skipped message="needs TensorRT"/></testcase>
      <testcase classname="tests.test_export_trt" name="test_c"><failure message="assert 0.9 &gt;= 0.99"/></testcase>
    </testsuite></testsuites>"""
    got = parse_junit(xml)
    assert got["passed"] == 1
    assert got["skipped"] == {"tests.test_export_trt::test_b": "needs TensorRT"}
    assert got["failed"] == [{"test": "tests.test_export_trt::test_c", "message": "assert 0.9 >= 0.99"}]


def test_marked_test_files_are_the_gpu_tests():
    from bench.gpu_check import marked_test_files

    names = {Path(p).name for p in marked_test_files()}
    assert "test_export_trt.py" in names and "test_bench_gpu_check.py" not in names
