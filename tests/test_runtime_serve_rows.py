"""``pvlm-serve`` row by row: its own pixel limit, EXIF orientation, and one-line errors that never cost
the other rows of a batch their answers (an in-process ``serve()`` called with tritonclient over loopback).
"""

from __future__ import annotations

import io
import time

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("pytriton", reason="pvlm-serve needs nvidia-pytriton (pip install -e '.[serve]')")
pytest.importorskip("tritonclient.grpc", reason="the tests call it with tritonclient[all] (pip install -e '.[serve]')")

from test_export_triton import (  # noqa: E402 - shared helpers and the session bundle fixture
    free_ports,
    lively_bundle,  # noqa: F401 - fixture
    local_texts,
    make_images,
)


@pytest.fixture(scope="module")
def server(lively_bundle, tmp_path_factory):
    """``serve()`` with its default limits in this process on free loopback ports; stopped at module end.

    A 300 ms queue delay batches requests sent together."""
    from runtime.serving.server import serve

    http, grpc, metrics = free_ports(3)
    triton = serve(lively_bundle, host="127.0.0.1", http_port=http, grpc_port=grpc, metrics_port=metrics,
                   max_batch=8, queue_delay_ms=300, backend="onnxruntime-cpu", threads=1, exit_timeout_s=5,
                   log_file=tmp_path_factory.mktemp("pytriton") / "tritonserver.log")
    try:
        triton.grpc_port = grpc
        yield triton
    finally:
        triton.stop()


def describe_batch(srv, payloads: list[bytes]) -> list[tuple[str, str]]:
    """One request of ``len(payloads)`` rows -> (TEXT, ERROR) per row."""
    import tritonclient.grpc as grpcclient

    inp = grpcclient.InferInput("IMAGE", [len(payloads), 1], "BYTES")
    inp.set_data_from_numpy(np.array([[p] for p in payloads], dtype=np.object_))
    with grpcclient.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}") as c:
        res = c.infer("pvlm", [inp], client_timeout=120)
    return [(t.decode(), e.decode()) for t, e in zip(res.as_numpy("TEXT")[:, 0], res.as_numpy("ERROR")[:, 0])]


def png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_pixel_limit_is_the_servers_and_fails_only_its_row(server, lively_bundle):
    """8000x8000 (64 Mpx, a 1-bit PNG of a few kB) passes the library's 64 Mpx limit; the server's default
    refuses it from the header, and the rows batched with it are still described."""
    from PIL import Image

    bomb = png(Image.new("1", (8000, 8000)))
    assert len(bomb) < 200_000
    good = make_images(2, seed=11)
    rows = describe_batch(server, [good[0], bomb, good[1]])
    assert rows[0] == (local_texts(lively_bundle, [good[0]])[0], "")
    assert rows[2] == (local_texts(lively_bundle, [good[1]])[0], "")
    text, error = rows[1]
    assert text == "" and error.startswith("input 1 ") and "8000x8000" in error and "pixel limit" in error, error
    assert "\n" not in error


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_orientation_is_applied(server, lively_bundle, orientation):
    """A phone JPEG stored sideways with an EXIF orientation tag is described upright."""
    from PIL import Image, ImageOps

    from runtime import Describer

    upright = np.zeros((128, 64, 3), np.uint8)  # a standing figure: red head, blue body, grey legs
    upright[:32, 16:48] = (220, 30, 30)
    upright[32:88, 8:56] = (30, 40, 200)
    upright[88:, 16:48] = (120, 120, 120)
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90 if orientation == 6
                                                else Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    data = buf.getvalue()

    opened = Image.open(io.BytesIO(data))
    assert opened.size == (128, 64) and opened.getexif()[0x0112] == orientation
    shown = ImageOps.exif_transpose(opened).convert("RGB")
    assert shown.size == (64, 128)
    d = Describer(lively_bundle, backend="onnxruntime-cpu", threads=1)
    want = d.describe([shown])[0].text
    sideways = d.describe([Image.fromarray(np.asarray(opened.convert("RGB")))])[0].text  # pixels as stored, no tag
    assert want != sideways, "the fixture must read differently upright and sideways"
    assert describe_batch(server, [data]) == [(want, "")]


def test_model_failure_is_one_line_per_row_and_serving_goes_on(server, lively_bundle, monkeypatch):
    """An exception inside the model (a multi-line ONNX Runtime error, say) reaches each client of the
    batch as one line in ERROR, never as a traceback; the next batch is answered normally."""
    from runtime import Describer

    images = make_images(2, seed=12)

    def broken(self, *args, **kwargs):
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code\n  at line 2\n  line 3")

    with monkeypatch.context() as m:
        m.setattr(Describer, "generate_ids", broken)
        rows = describe_batch(server, images)
    for i, (text, error) in enumerate(rows):
        assert text == "" and error.startswith(f"input {i}: the model failed"), error
        assert "RuntimeError" in error and "\n" not in error and "Traceback" not in error and "line 2" not in error
    assert describe_batch(server, images) == [(t, "") for t in local_texts(lively_bundle, images)]


def test_unexpected_decoding_error_costs_only_its_row(server, lively_bundle, monkeypatch):
    """A decoder bug (an exception that is not an InputError) fails its own row with one line."""
    import runtime.serving.server

    real = runtime.serving.server.image_from_bytes

    def flaky(data, *args, **kwargs):
        if data.startswith(b"BOOM"):
            raise ZeroDivisionError("decoder bug\nwith a second line")
        return real(data, *args, **kwargs)

    monkeypatch.setattr(runtime.serving.server, "image_from_bytes", flaky)
    images = make_images(2, seed=13)
    rows = describe_batch(server, [images[0], b"BOOM and more", images[1]])
    want = local_texts(lively_bundle, images)
    assert rows[0] == (want[0], "") and rows[2] == (want[1], "")
    text, error = rows[1]
    assert text == "" and error.startswith("input 1: ") and "\n" not in error and "Traceback" not in error, error


def test_an_error_names_the_row_in_its_own_request(server, lively_bundle):
    """Two requests batched together: the second request's bad image is its input 0, not row 2 of the batch."""
    import tritonclient.grpc as grpcclient

    images = make_images(2, seed=14)
    answers: dict[str, object] = {}

    def request(payloads: list[bytes]):
        inp = grpcclient.InferInput("IMAGE", [len(payloads), 1], "BYTES")
        inp.set_data_from_numpy(np.array([[p] for p in payloads], dtype=np.object_))
        return [inp]

    def done(name: str):
        return lambda result, error: answers.__setitem__(name, error or result)

    with grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as c:
        c.async_infer("pvlm", request(images), done("two good"), client_timeout=60)
        c.async_infer("pvlm", request([b"not an image"]), done("one bad"), client_timeout=60)
        deadline = time.monotonic() + 60
        while len(answers) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    good, bad = answers["two good"], answers["one bad"]
    assert [t.decode() for t in good.as_numpy("TEXT")[:, 0]] == local_texts(lively_bundle, images)
    error = bad.as_numpy("ERROR")[0, 0].decode()
    assert error.startswith("input 0 ") and "not a readable image" in error, error
