"""``pvlm-serve``: PyTriton bound to ``Describer``, called with tritonclient over loopback.

In-process server (``runtime.serving.server.serve``) for parity, batching, health, metrics, faults and load;
the console entry point as a subprocess for SIGTERM and usage errors.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("pytriton", reason="pvlm-serve needs nvidia-pytriton (pip install -e '.[serve]')")
pytest.importorskip("tritonclient.grpc", reason="the tests call it with tritonclient[all] (pip install -e '.[serve]')")

from test_export_triton import (  # noqa: E402 - shared helpers and the session bundle fixture
    check_load_nothing_lost,
    free_ports,
    lively_bundle,  # noqa: F401 - fixture
    local_texts,
    load_with_clients,
    make_images,
)

N_IMAGES = 24


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    return make_images(N_IMAGES, seed=5)


@pytest.fixture(scope="module")
def expected(lively_bundle, images) -> list[str]:
    return local_texts(lively_bundle, images)


@pytest.fixture(scope="module")
def pvlm_server(lively_bundle, tmp_path_factory):
    """``serve()`` in this process on free loopback ports; stopped at module end."""
    from runtime.serving.server import serve

    http, grpc, metrics = free_ports(3)
    triton = serve(lively_bundle, host="127.0.0.1", http_port=http, grpc_port=grpc, metrics_port=metrics,
                   max_batch=8, queue_delay_ms=50, backend="onnxruntime-cpu", exit_timeout_s=5,
                   log_file=tmp_path_factory.mktemp("pytriton") / "tritonserver.log")
    try:
        triton.ports = {"http": http, "grpc": grpc, "metrics": metrics}
        yield triton
    finally:
        triton.stop()


def _client(srv):
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(f"127.0.0.1:{srv.ports['grpc']}")


def _inputs(data: bytes):
    import tritonclient.grpc as grpcclient

    inp = grpcclient.InferInput("IMAGE", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[data]], dtype=np.object_))
    return [inp]


def _describe(client, data: bytes) -> tuple[str, dict, str]:
    res = client.infer("pvlm", _inputs(data), client_timeout=60)
    return (res.as_numpy("TEXT")[0, 0].decode(), json.loads(res.as_numpy("ATTRIBUTES")[0, 0]),
            res.as_numpy("ERROR")[0, 0].decode())


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read().decode()


def test_import_runtime_does_not_load_pytriton(tmp_path):
    code = ("import sys, runtime, runtime.serving.server, runtime.backends.triton_bls; "
            "print(sorted(m for m in ('pytriton', 'tritonclient', 'torch', 'pvlm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_image_from_bytes_limits():
    import io

    from PIL import Image

    from runtime.preprocess import InputError, image_from_bytes

    buf = io.BytesIO()
    Image.new("L", (8000, 6000)).save(buf, "PNG")  # 48 Mpx that compress to a few kB: a decompression bomb
    assert len(buf.getvalue()) < 1_000_000
    with pytest.raises(InputError, match="input 2 .*8000x6000 is 48000000 pixels, more than the 40000000 pixel limit"):
        image_from_bytes(buf.getvalue(), 2, max_pixels=40_000_000)
    with pytest.raises(InputError, match="larger than the 100 byte limit"):
        image_from_bytes(make_images(1)[0], max_bytes=100)
    with pytest.raises(InputError, match="not a readable image"):
        image_from_bytes(b"\xff\xd8\xff truncated jpeg")
    assert image_from_bytes(make_images(1)[0]).mode == "RGB"


def _executions_by_batch_size(srv) -> dict[int, int]:
    req = urllib.request.Request(f"http://127.0.0.1:{srv.ports['http']}/v2/models/pvlm/stats",
                                 headers={"triton-access-token": srv.get_access_token()})
    with urllib.request.urlopen(req, timeout=10) as r:
        stats = json.loads(r.read())["model_stats"][0]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats["batch_stats"]}


def test_concurrent_requests_match_local_describer_and_batch(pvlm_server, images, expected):
    from runtime import parse_attributes

    before = _executions_by_batch_size(pvlm_server)  # the start-up check's full batch is not the clients'
    load = load_with_clients(lambda: _client(pvlm_server), _describe, images, threads=8, budget_s=120)
    assert not load["errors"], load["errors"]
    for i, (text, attrs, error) in enumerate(load["results"]):
        assert error == "" and text == expected[i], f"image {i}: {error}"
        assert attrs == json.loads(json.dumps(parse_attributes(text)))
    after = _executions_by_batch_size(pvlm_server)
    sizes = {size: n - before.get(size, 0) for size, n in after.items() if n > before.get(size, 0)}
    print(f"pvlm executions by batch size: {dict(sorted(sizes.items()))}")
    assert max(sizes) > 1, f"no execution had more than one request: {sizes}"


def test_health_and_metrics(pvlm_server, images):
    ports = pvlm_server.ports
    assert _get(f"http://127.0.0.1:{ports['http']}/v2/health/ready")[0] == 200
    assert _get(f"http://127.0.0.1:{ports['http']}/v2/health/live")[0] == 200
    assert _get(f"http://127.0.0.1:{ports['http']}/v2/models/pvlm/ready")[0] == 200
    with _client(pvlm_server) as c:
        _describe(c, images[0])
    status, text = _get(f"http://127.0.0.1:{ports['metrics']}/metrics")
    assert status == 200 and "nv_inference_request_success" in text
    success = [line for line in text.splitlines() if line.startswith("nv_inference_request_success{") and
               'model="pvlm"' in line]
    assert success and float(success[0].rsplit(" ", 1)[1]) >= 1


def test_malformed_requests_get_clear_errors_and_server_keeps_serving(pvlm_server, images, expected):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from runtime.serving.server import MAX_IMAGE_BYTES

    with _client(pvlm_server) as c:
        text, _, error = _describe(c, b"this is not an image")
        assert text == "" and "not a readable image" in error
        text, _, error = _describe(c, b"")
        assert text == "" and "empty" in error
        text, _, error = _describe(c, images[0] + bytes(MAX_IMAGE_BYTES))
        assert text == "" and f"{MAX_IMAGE_BYTES} byte limit" in error
        wrong = grpcclient.InferInput("IMAGE", [1, 1], "FP32")
        wrong.set_data_from_numpy(np.zeros((1, 1), np.float32))
        with pytest.raises(InferenceServerException, match="FP32|BYTES|data ?type"):
            c.infer("pvlm", [wrong], client_timeout=60)
        empty = grpcclient.InferInput("IMAGE", [1, 0], "BYTES")
        empty.set_data_from_numpy(np.zeros((1, 0), dtype=np.object_))
        with pytest.raises(InferenceServerException, match="shape"):
            c.infer("pvlm", [empty], client_timeout=60)
        assert _describe(c, images[1])[0] == expected[1]  # still serving, still right
        assert c.is_server_live() and c.is_model_ready("pvlm")


def test_decoding_per_request(pvlm_server, lively_bundle, images, expected):
    """Request parameters choose beam search or sampling per request (concurrent requests of different decodings,
    batched together); requests without them stay greedy; refused parameters fail only their own rows."""
    from PIL import Image

    from runtime import Describer
    from runtime.decoding import DecodingOptions

    beams, sample = DecodingOptions(beams=3, n_best=2), DecodingOptions(sample=True, n_best=2, seed=9, top_p=0.9)
    with Describer(lively_bundle, backend="onnxruntime-cpu") as d:
        pil = [Image.open(io.BytesIO(b)) for b in images[:9]]
        want_beams = [[a.text for a in x.alternatives] for x in d.describe(pil, decoding=beams)]
        # sampling seeds by an image's place in its own request: index 0 for one-image requests
        want_sample = [[a.text for a in d.describe([p], decoding=sample)[0].alternatives] for p in pil]
    params = [{"beams": 3, "n_best": 2}, {"sample": True, "n_best": 2, "seed": 9, "top_p": 0.9}, {}]

    def call(client, i: int):
        res = client.infer("pvlm", _inputs(images[i]), parameters=params[i % 3], client_timeout=60)
        return (res.as_numpy("TEXT")[0, 0].decode(), json.loads(res.as_numpy("ALTERNATIVES")[0, 0]),
                res.as_numpy("ERROR")[0, 0].decode())

    load = load_with_clients(lambda: _client(pvlm_server), call, list(range(9)), threads=9, budget_s=120)
    assert not load["errors"], load["errors"]
    for i, (text, alts, error) in enumerate(load["results"]):
        want = [want_beams[i], want_sample[i], [expected[i]]][i % 3]
        assert error == "" and text == want[0] and [a["text"] for a in alts] == want, i
        assert (alts[0]["score"] is None) == (i % 3 == 2)
    with _client(pvlm_server) as c:
        res = c.infer("pvlm", _inputs(images[0]), parameters={"beams": 0}, client_timeout=60)
        assert res.as_numpy("TEXT")[0, 0] == b""
        assert res.as_numpy("ERROR")[0, 0].decode() == "request parameters: beams must be an integer >= 1, got 0"
        assert _describe(c, images[1])[0] == expected[1]


def test_load_nothing_lost(pvlm_server, images, expected):
    check_load_nothing_lost(lambda: _client(pvlm_server), _describe, images, expected, "pvlm-serve (PyTriton)")


def _serve_cmd(bundle: Path, ports: list[int], triton_log: Path) -> list[str]:
    return [sys.executable, "-m", "runtime.serving.server", str(bundle), "--host", "127.0.0.1", "--http-port", str(ports[0]),
            "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]), "--backend", "onnxruntime-cpu",
            "--triton-log", str(triton_log)]


def test_cli_sigterm_shuts_down_cleanly(lively_bundle, images, expected, tmp_path):
    from runtime.serving.server import wait_ready

    ports = free_ports(3)
    log = tmp_path / "pvlm-serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(_serve_cmd(lively_bundle, ports, tmp_path / "tritonserver.log"), stdout=out,
                                stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_ready(f"http://127.0.0.1:{ports[0]}", timeout_s=120, proc=proc, model="pvlm")
        import tritonclient.grpc as grpcclient

        with grpcclient.InferenceServerClient(f"127.0.0.1:{ports[1]}") as c:
            assert _describe(c, images[2])[0] == expected[2]
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        print(f"pvlm-serve stopped {time.monotonic() - t0:.1f} s after SIGTERM (exit code {code})")
        assert code in (0, -signal.SIGTERM), log.read_text()[-3000:]
        assert "stopped" in log.read_text()
        with pytest.raises(OSError):  # nothing listens any more: tritonserver went with it
            _get(f"http://127.0.0.1:{ports[0]}/v2/health/live")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_cli_bad_bundle_is_a_usage_error(tmp_path):
    ports = free_ports(3)
    out = subprocess.run(_serve_cmd(tmp_path / "missing", ports, tmp_path / "t.log"), capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error:") and "does not exist" in out.stderr
