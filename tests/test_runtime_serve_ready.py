"""Readiness means the model answers: the readiness probe docs/serving.md names says ready only when a
request succeeds, and a bundle that cannot describe never becomes ready (``pvlm-serve`` exits with one line)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("pytriton", reason="pvlm-serve needs nvidia-pytriton (pip install -e '.[serve]')")
pytest.importorskip("tritonclient.grpc", reason="the tests call it with tritonclient[all] (pip install -e '.[serve]')")

from test_export_triton import free_ports, make_images  # noqa: E402 - shared helpers

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "serving.md"


def serve_cmd(bundle: Path, ports: list[int], *extra: str) -> list[str]:
    return [sys.executable, "-m", "runtime.serving.server", str(bundle), "--http-port", str(ports[0]), "--grpc-port",
            str(ports[1]), "--metrics-port", str(ports[2]), "--backend", "onnxruntime-cpu", "--threads", "1", *extra]


def status(url: str) -> int | None:
    """HTTP status of GET ``url``; None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return None


def documented_probe() -> str:
    """The readiness probe docs/serving.md tells load balancers and Kubernetes to use."""
    probes = set(re.findall(r"`(/v2/[^`]*ready)` as the readiness probe", DOCS.read_text()))
    assert len(probes) == 1, f"docs/serving.md should name one readiness probe, names {probes}"
    return probes.pop().replace("<name>", "pvlm")


def test_documented_probe_says_ready_only_when_a_request_succeeds(tiny_bundle, tmp_path):
    """Poll the documented probe from the moment pvlm-serve starts; the first 200 must mean that a
    request sent at once is described (not refused as an unknown model)."""
    import tritonclient.grpc as grpcclient

    from runtime import Describer

    probe = documented_probe()
    img = make_images(1, seed=21)[0]
    want = Describer(tiny_bundle, backend="onnxruntime-cpu", threads=1).describe([img])[0].text
    ports = free_ports(3)
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(serve_cmd(tiny_bundle, ports, "--triton-log", str(tmp_path / "t.log")),
                                stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while status(f"http://127.0.0.1:{ports[0]}{probe}") != 200:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"{probe} never said ready: {log.read_text()}"
            time.sleep(0.02)
        inp = grpcclient.InferInput("IMAGE", [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[img]], dtype=np.object_))
        with grpcclient.InferenceServerClient(f"127.0.0.1:{ports[1]}") as c:
            try:
                res = c.infer("pvlm", [inp], client_timeout=60)
            except Exception as e:  # noqa: BLE001 - the assertion names what the client got
                pytest.fail(f"{probe} said ready, but a request sent at once failed: {e}")
        assert res.as_numpy("ERROR")[0, 0].decode() == ""
        assert res.as_numpy("TEXT")[0, 0].decode() == want
    finally:
        proc.terminate()
        proc.wait(60)


# A backend that loads but fails when it runs (a GPU kernel missing at run time, say): every describe raises.
FAILING_MODEL = """
import runtime.describer

def _fail(self, *args, **kwargs):
    raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code\\n  while running Conv")

runtime.describer.Describer.generate_ids = _fail
"""


@pytest.mark.parametrize("breakage", ["manifest", "model"])
def test_a_model_that_cannot_describe_is_never_ready(tiny_bundle, tmp_path, breakage):
    """A bundle whose manifest input size is not the graph's, or a model that fails when it runs, is never
    reported ready on any probe: pvlm-serve exits non-zero with one error line naming the bundle."""
    env = dict(os.environ)
    bundle = tiny_bundle
    if breakage == "manifest":
        bundle = tmp_path / "broken"
        shutil.copytree(tiny_bundle, bundle)
        manifest = json.loads((bundle / "manifest.json").read_text())
        manifest["preprocess"]["height"] += 32
        (bundle / "manifest.json").write_text(json.dumps(manifest))
    else:
        site = tmp_path / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(FAILING_MODEL)
        env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), env.get("PYTHONPATH", "")])
    ports = free_ports(3)
    cmd = serve_cmd(bundle, ports, "--start-timeout", "90", "--triton-log", str(tmp_path / "t.log"))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    said_ready = []
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            for path in ("/v2/health/ready", "/v2/models/pvlm/ready"):
                if status(f"http://127.0.0.1:{ports[0]}{path}") == 200:
                    said_ready.append(path)
            if said_ready:
                break
            time.sleep(0.1)
        assert not said_ready, f"a model that cannot describe was reported ready on {said_ready}"
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:  # SIGTERM first: a killed pvlm-serve would leave its tritonserver behind
            proc.terminate()
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate(timeout=30)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and str(bundle) in lines[0], stderr
    assert "Traceback" not in stderr
    if breakage == "model":
        assert proc.returncode == 1 and "warm-up description failed" in lines[0] and "RuntimeError" in lines[0]
    else:  # refused when the bundle loads (exit 2) or by the warm-up (exit 1)
        assert proc.returncode in (1, 2), stderr
