"""Hostile inputs to ``Describer``: special files among the inputs, boxes that are not finite numbers,
numpy arrays without a stated channel order, and ``close()`` while other threads describe."""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def describer(tiny_bundle):
    from runtime import Describer

    return Describer(tiny_bundle, backend="onnxruntime-cpu", threads=1)


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    """A uint8 (120, 80, 3) RGB frame whose channels all differ (so a swap shows)."""
    from pvlm.synth import render_person, sample_attributes

    rng = np.random.default_rng(41)
    return np.asarray(render_person(sample_attributes(rng), rng, size=(120, 80)), dtype=np.uint8).copy()


def recorder(d, monkeypatch) -> list[np.ndarray]:
    """Record every pixel batch ``d`` sends to the model."""
    seen: list[np.ndarray] = []
    real = d.generate_ids

    def wrapped(pixels, *args, **kwargs):
        seen.append(np.array(pixels, copy=True))
        return real(pixels, *args, **kwargs)

    monkeypatch.setattr(d, "generate_ids", wrapped, raising=False)
    return seen


# --------------------------------------------------------------------------- special files


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
def test_fifo_and_device_are_refused_without_blocking(describer, rgb, tmp_path):
    """A FIFO would block open() until a writer comes; it (and a device) is an error for that input only."""
    good = tmp_path / "good.png"
    Image.fromarray(rgb).save(good)
    fifo = tmp_path / "stream.png"
    os.mkfifo(fifo)
    result: list = []
    worker = threading.Thread(target=lambda: result.append(describer.describe([good, fifo, os.devnull, good])),
                              daemon=True)
    worker.start()
    worker.join(60)
    if worker.is_alive():  # unblock the reader stuck in open(), then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(10)
        pytest.fail("describe() blocked on a FIFO among its inputs")
    (out,) = result
    assert [r.ok for r in out] == [True, False, False, True]
    assert "input 1" in out[1].error and "stream.png" in out[1].error and "FIFO" in out[1].error
    assert "input 2" in out[2].error and "not a regular file" in out[2].error
    assert out[0].tokens == out[3].tokens


# --------------------------------------------------------------------------- boxes


def test_non_finite_or_huge_box_fails_only_that_box(describer, rgb, monkeypatch):
    seen = recorder(describer, monkeypatch)
    boxes = [
        (10, 10, 60, 100),             # 0: fine
        (0, 0, 1e400, 50),             # 1: inf (1e400 overflows to inf)
        (0, float("nan"), 40, 50),     # 2: NaN
        (-float("inf"), 0, 40, 50),    # 3: -inf
        (0, 0, 10**400, 50),           # 4: an int no float can hold
        (5, 5, 40, 60),                # 5: fine
    ]
    out = describer.describe_crops(Image.fromarray(rgb), boxes)
    assert [r.ok for r in out] == [True, False, False, False, False, True]
    for i in (1, 2, 3):
        assert out[i].error.startswith(f"box {i}:") and "finite" in out[i].error, out[i].error
    assert out[4].error.startswith("box 4:") and len(out[4].error) < 200, out[4].error
    (batch,) = seen
    assert batch.shape[0] == 2
    from runtime import InputError

    with pytest.raises(InputError, match="box 0"):
        describer.describe_crops(Image.fromarray(rgb), [(0, 0, 10**400, 50)], on_error="raise")


# --------------------------------------------------------------------------- channel order


def test_array_without_channel_order_is_a_type_error(describer, rgb, tmp_path):
    png = tmp_path / "frame.png"
    Image.fromarray(rgb).save(png)
    for call in (lambda: describer.describe([png, rgb]), lambda: describer.describe(rgb),
                 lambda: describer.describe_crops(rgb, [(0, 0, 10, 10)]), lambda: describer.preprocess(rgb)):
        with pytest.raises(TypeError, match="channel_order='rgb' or 'bgr'"):
            call()
    # paths, bytes and PIL images have no ambiguous channel order: nothing to state
    assert all(r.ok for r in describer.describe([png, png.read_bytes(), Image.fromarray(rgb)]))
    assert describer.describe_crops(Image.fromarray(rgb), [(0, 0, 40, 40)])[0].ok
    with pytest.raises(ValueError, match="channel_order must be 'rgb' or 'bgr'"):
        describer.describe(rgb, channel_order="RGB!")


def test_opencv_bgr_frame_with_channel_order_bgr(describer, rgb, monkeypatch):
    """The OpenCV path: a BGR frame (as cv2.imread / VideoCapture give) with channel_order="bgr" reaches the model
    as the same pixels, and gets the same tokens, as the RGB image; without it the colours would be swapped."""
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    box = [(5, 10, 70, 110)]
    seen = recorder(describer, monkeypatch)
    a = describer.describe_crops(bgr, box, channel_order="bgr")[0]
    b = describer.describe_crops(Image.fromarray(rgb), box)[0]
    c = describer.describe_crops(rgb, box, channel_order="rgb")[0]
    assert a.ok and a.tokens == b.tokens == c.tokens
    np.testing.assert_array_equal(seen[0], seen[1])
    np.testing.assert_array_equal(seen[0], seen[2])
    np.testing.assert_array_equal(describer.preprocess(bgr, channel_order="bgr"),
                                  describer.preprocess(Image.fromarray(rgb)))
    swapped = describer.preprocess(bgr, channel_order="rgb")
    assert not np.array_equal(swapped, describer.preprocess(rgb, channel_order="rgb"))
    d = describer.describe([bgr], channel_order="bgr")[0]
    assert d.tokens == describer.describe([Image.fromarray(rgb)])[0].tokens


def test_describer_channel_order_is_the_default_and_the_call_wins(tiny_bundle, rgb):
    from runtime import Describer

    d = Describer(tiny_bundle, backend="onnxruntime-cpu", threads=1, channel_order="bgr")
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    np.testing.assert_array_equal(d.preprocess(bgr), d.preprocess(rgb, channel_order="rgb"))
    with pytest.raises(ValueError, match="channel_order"):
        Describer(tiny_bundle, backend="onnxruntime-cpu", channel_order="rgba")


# --------------------------------------------------------------------------- close() while describing


@pytest.mark.parametrize("decoder", ["auto", "portable"])
def test_close_while_many_threads_describe(tiny_bundle, rgb, decoder):
    """Every thread gets its results or BackendClosed, never a failure inside a released session."""
    from runtime import Describer
    from runtime.backends import BackendClosed

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so that close() lands between any two lines
    crops = [rgb[:64, :32], rgb[10:90, 20:60]]

    def work(d, start, outcomes):
        start.wait()
        try:
            for _ in range(30):
                assert all(r.ok for r in d.describe(crops))
            outcomes.append("done")
        except BackendClosed:
            outcomes.append("closed")
        except BaseException as e:  # noqa: BLE001 - the test reports whatever else escaped
            outcomes.append(e)

    try:
        for _ in range(10):
            d = Describer(tiny_bundle, backend="onnxruntime-cpu", threads=1, decoder=decoder, channel_order="rgb")
            outcomes: list = []
            start = threading.Barrier(9)
            threads = [threading.Thread(target=work, args=(d, start, outcomes)) for _ in range(8)]
            for t in threads:
                t.start()
            start.wait()
            time.sleep(0.02)
            d.close()
            for t in threads:
                t.join(60)
            others = [o for o in outcomes if o not in ("done", "closed")]
            assert len(outcomes) == 8 and not others, others
            with pytest.raises(BackendClosed):
                d.describe(crops)
    finally:
        sys.setswitchinterval(old)


def test_close_waits_for_the_call_in_flight(tiny_bundle, rgb):
    """close() during an encoder run: the run finishes on a live session, then the loop gets BackendClosed;
    close() returns only after that call, and only then releases the sessions."""
    from runtime import Describer
    from runtime.backends import BackendClosed
    from runtime.backends.ort import OrtBackend

    d = Describer(tiny_bundle, backend="onnxruntime-cpu", threads=1, decoder="portable", channel_order="rgb")
    backend = d.backend
    assert isinstance(backend, OrtBackend)
    entered, go = threading.Event(), threading.Event()

    def slow_encoder(pixels):
        entered.set()
        go.wait(30)
        return OrtBackend.run_encoder(backend, pixels)

    backend.run_encoder = slow_encoder
    outcome: list = []

    def describe():
        try:
            outcome.append(d.describe([rgb]))
        except BaseException as e:  # noqa: BLE001 - the test checks which one
            outcome.append(e)

    worker = threading.Thread(target=describe)
    worker.start()
    assert entered.wait(30)
    closer = threading.Thread(target=d.close)
    closer.start()
    deadline = time.monotonic() + 10
    while not backend.closed and time.monotonic() < deadline:
        time.sleep(0.005)
    assert backend.closed  # new calls are refused from now on...
    time.sleep(0.1)
    assert closer.is_alive()  # ...but the sessions stay until the encoder run in flight returns
    assert backend.encoder is not None
    go.set()
    worker.join(30)
    closer.join(30)
    assert not closer.is_alive() and backend.encoder is None
    assert len(outcome) == 1 and isinstance(outcome[0], BackendClosed), outcome
