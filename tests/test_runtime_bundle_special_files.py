"""Special files inside a bundle (a FIFO in place of a graph, a README or the manifest) are refused at once:
reading one would block forever. Each load runs under a deadline, so a regression fails instead of hanging."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from runtime.bundle import Bundle, BundleError, is_bundle, sha256_path

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs need a POSIX system")
DEADLINE_S = 10


@contextlib.contextmanager
def deadline(seconds: int = DEADLINE_S):
    """TimeoutError in the main thread after ``seconds``: a blocked open() of a FIFO is interrupted by it."""
    def expire(signum, frame):
        raise TimeoutError(f"still blocked after {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)



def fifo_in_place_of(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


@pytest.mark.parametrize("name", ["encoder.onnx", "decoder_ort.onnx", "README.md"])
@pytest.mark.parametrize("verify", [True, False])
def test_a_fifo_in_place_of_a_listed_file_is_refused(bundle_copy, name, verify):
    fifo_in_place_of(bundle_copy / name)
    with deadline(), pytest.raises(BundleError) as e:
        Bundle.load(bundle_copy, verify=verify)
    msg = str(e.value)
    assert name in msg and "a FIFO, not a regular file" in msg and "\n" not in msg, msg


def test_a_fifo_as_the_manifest_is_refused_and_is_not_a_bundle(bundle_copy):
    fifo_in_place_of(bundle_copy / "manifest.json")
    with deadline():
        assert not is_bundle(bundle_copy)
        with pytest.raises(BundleError, match="manifest.json: a FIFO, not a regular file"):
            Bundle.load(bundle_copy, verify=False)


def test_a_fifo_inside_a_package_artifact_is_refused(bundle_copy):
    from export.manifest import artifact_entry, write_manifest

    pkg = bundle_copy / "model.mlpackage"
    (pkg / "Data").mkdir(parents=True)
    (pkg / "Data" / "weights.bin").write_bytes(b"w")
    m = Bundle.load(bundle_copy).manifest
    write_manifest(bundle_copy, m.with_artifacts({"model.mlpackage": artifact_entry(bundle_copy, "model.mlpackage")}))
    Bundle.load(bundle_copy)
    os.mkfifo(pkg / "Data" / "pipe")
    with deadline(), pytest.raises(BundleError, match="pipe: a FIFO, not a regular file"):
        Bundle.load(bundle_copy)


def test_sha256_path_refuses_a_fifo(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    with deadline(), pytest.raises(BundleError, match="a FIFO"):
        sha256_path(tmp_path / "pipe")


def test_a_directory_in_place_of_the_manifest_is_named(bundle_copy):
    (bundle_copy / "manifest.json").unlink()
    (bundle_copy / "manifest.json").mkdir()
    with pytest.raises(BundleError, match="manifest.json: a directory, not a regular file"):
        Bundle.load(bundle_copy)
