"""``pvlm-serve`` fails fast on bad hosts, ports and manifests (one line, exit 2, no PyTriton start-up wait),
stops promptly on SIGTERM during start-up, and on SIGTERM drains what is queued before exiting."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("pytriton", reason="pvlm-serve needs nvidia-pytriton (pip install -e '.[serve]')")
pytest.importorskip("tritonclient.grpc", reason="the tests call it with tritonclient[all] (pip install -e '.[serve]')")

from test_export_triton import free_ports, make_images  # noqa: E402 - shared helpers


def serve_cmd(bundle: Path, ports: list[int], *extra: str) -> list[str]:
    return [sys.executable, "-m", "runtime.serving.server", str(bundle), "--http-port", str(ports[0]), "--grpc-port",
            str(ports[1]), "--metrics-port", str(ports[2]), "--backend", "onnxruntime-cpu", "--threads", "1", *extra]


def run_fast(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    t0 = time.monotonic()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=cwd)
    res.seconds = time.monotonic() - t0
    return res


def assert_usage_error(res, *needles: str) -> None:
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    assert "Traceback" not in res.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    assert res.seconds < 30, f"took {res.seconds:.1f} s"  # PyTriton's own start-up timeout is 120 s


@pytest.mark.parametrize("host,needle", [("999.1.1.1", "not a valid IPv4 address"),
                                         ("name.invalid", "unknown host"),
                                         ("192.0.2.1", "cannot listen")])  # TEST-NET-1: on no interface here
def test_bad_host_fails_fast(tiny_bundle, tmp_path, host, needle):
    assert_usage_error(run_fast(serve_cmd(tiny_bundle, free_ports(3), "--host", host), tmp_path), host, needle)


def test_duplicate_ports_fail_fast(tiny_bundle, tmp_path):
    p = free_ports(2)
    assert_usage_error(run_fast(serve_cmd(tiny_bundle, [p[0], p[1], p[0]]), tmp_path),
                       "--http-port and --metrics-port are both")


def test_port_in_use_fails_fast(tiny_bundle, tmp_path):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        p = free_ports(2)
        assert_usage_error(run_fast(serve_cmd(tiny_bundle, [p[0], port, p[1]]), tmp_path),
                           f"--grpc-port {port}", "already in use")


@pytest.mark.parametrize("manifest", [[1, 2, 3], {"format": "pvlm-bundle", "version": 1, "model": {}}])
def test_wrong_shape_manifest_fails_fast(tiny_bundle, tmp_path, manifest):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    (b / "manifest.json").write_text(json.dumps(manifest))
    assert_usage_error(run_fast(serve_cmd(b, free_ports(3)), tmp_path), "invalid manifest")


def test_non_loopback_host_warns(tiny_bundle):
    """Checked in-process through check_listen (binding 0.0.0.0 for real would expose a test server)."""
    from runtime.serving.server import check_listen

    assert check_listen("127.0.0.1", {"http": free_ports(1)[0]}) is True
    assert check_listen("localhost", {"http": free_ports(1)[0]}) is True
    assert check_listen("0.0.0.0", {"http": free_ports(1)[0]}) is False


def test_sigterm_during_start_up_stops_within_seconds(tiny_bundle, tmp_path):
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(serve_cmd(tiny_bundle, free_ports(3), "--triton-log", str(tmp_path / "t.log")),
                                stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        time.sleep(2.0)  # loading the bundle or starting tritonserver
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(40)
        took = time.monotonic() - t0
        text = log.read_text()
        assert code == 0, text
        assert "Traceback" not in text and "stopped" in text
        assert took < 40, f"{took:.1f} s"
        print(f"stopped {took:.1f} s after SIGTERM during start-up")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_sigterm_drains_queued_requests_and_refuses_new_ones_clearly(tiny_bundle, tmp_path):
    """Requests held in the dynamic batcher's queue (3 s delay) when SIGTERM arrives are still answered;
    one sent after it is refused with a status that says the server is stopping."""
    import tritonclient.grpc as grpcclient

    from runtime import Describer
    from runtime.serving.server import wait_ready

    img = make_images(1, seed=3)[0]
    want = Describer(tiny_bundle, backend="onnxruntime-cpu", threads=1).describe([img])[0].text
    ports = free_ports(3)
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(serve_cmd(tiny_bundle, ports, "--queue-delay-ms", "3000", "--drain-timeout", "20",
                                          "--triton-log", str(tmp_path / "t.log")),
                                stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    answers: list[tuple[str, str]] = []

    def done(result, error) -> None:
        answers.append(("", str(error)) if error else (result.as_numpy("TEXT")[0, 0].decode(), ""))

    def request():
        inp = grpcclient.InferInput("IMAGE", [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[img]], dtype=np.object_))
        return [inp]

    try:
        wait_ready(f"http://127.0.0.1:{ports[0]}", timeout_s=120, proc=proc, model="pvlm")
        with grpcclient.InferenceServerClient(f"127.0.0.1:{ports[1]}") as client:
            for _ in range(3):
                client.async_infer("pvlm", request(), done, client_timeout=60)
            time.sleep(0.5)  # queued in the batcher, which waits 3 s for a fuller batch
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            with pytest.raises(Exception) as late:
                client.infer("pvlm", request(), client_timeout=30)
            code = proc.wait(60)
            took = time.monotonic() - t0
        text = log.read_text()
        assert code == 0 and "Traceback" not in text, text
        assert answers == [(want, "")] * 3, answers
        assert "stopping" in str(late.value) or "unknown model" in str(late.value) or "UNAVAILABLE" in str(late.value)
        assert str(late.value).strip()
        assert "draining" in text and "stopped" in text
        assert took < 20 + 30, f"{took:.1f} s"
        print(f"drained 3 queued requests and stopped {took:.1f} s after SIGTERM; late request: {late.value}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
