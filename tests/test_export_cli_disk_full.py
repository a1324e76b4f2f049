"""``pvlm-export`` on a full disk: one ``error: writing OUT: No space left on device`` line, exit 1, and the
output as it was (nothing half-written, no temporary directory left behind).

The disk fills at the system-call boundary: ``os.sendfile`` (how ``shutil.copy2`` copies on Linux) and
``os.fsync`` (how the atomic writers commit a file) raise ``OSError(ENOSPC)``.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("onnxruntime")

NO_SPACE = "No space left on device"


def run_export(*args) -> object:
    from export.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def fill_disk(monkeypatch, *, copies: Callable[[str], bool] = lambda dst: True, fsync: bool = False) -> None:
    """Make copies whose destination path passes ``copies`` (and every fsync, with ``fsync=True``) fail with
    ENOSPC, as a full disk does."""
    real_sendfile = os.sendfile

    def sendfile(out_fd, in_fd, offset, count):
        if copies(fd_path(out_fd)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_sendfile(out_fd, in_fd, offset, count)

    monkeypatch.setattr(os, "sendfile", sendfile)
    monkeypatch.setattr(shutil, "_USE_CP_SENDFILE", True)
    if fsync:
        monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, NO_SPACE)))


needs_sendfile_copies = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                           reason="shutil copies through os.sendfile on Linux only")


@needs_sendfile_copies
def test_triton_full_disk_is_one_line_and_writes_nothing(tiny_bundle, tmp_path, monkeypatch):
    out = tmp_path / "repo"
    fill_disk(monkeypatch)
    res = run_export("triton", tiny_bundle, "--out", out)
    assert res.exit_code == 1, res.output
    assert res.stderr.splitlines() == [f"error: writing {out}: {NO_SPACE}"], res.output
    assert not out.exists() and leftovers(tmp_path) == []


@needs_sendfile_copies
def test_triton_force_full_disk_in_the_runtime_copy_keeps_the_old_repository(tiny_bundle, tmp_path, monkeypatch):
    """The runtime package is copied with copytree, which collects every failed file into one shutil.Error:
    the line still says why, and the repository being replaced stays as it was."""
    import runtime

    # the package as shipped (a working tree may hold build folders of its own beside it)
    package = shutil.copytree(Path(runtime.__file__).parent, tmp_path / "src" / "runtime",
                              ignore=shutil.ignore_patterns("__pycache__", "build"))
    monkeypatch.setattr(runtime, "__file__", str(package / "__init__.py"))
    out = tmp_path / "repo"
    for model in ("pvlm_encoder", "pvlm_decoder", "pvlm_describer"):  # a repository an earlier run wrote
        (out / model / "1").mkdir(parents=True)
        (out / model / "config.pbtxt").write_text(f'name: "{model}"\n')
    before = snapshot(out)
    fill_disk(monkeypatch, copies=lambda dst: "/pvlm_describer/1/runtime/" in dst)
    res = run_export("triton", tiny_bundle, "--out", out, "--force")
    assert res.exit_code == 1, res.output
    assert res.stderr.splitlines() == [f"error: writing {out}: {NO_SPACE}"], res.output
    assert snapshot(out) == before and leftovers(tmp_path) == []


def test_onnx_force_full_disk_keeps_the_old_bundle(tiny_checkpoint, tiny_bundle, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out)
    before = snapshot(out)
    fill_disk(monkeypatch, copies=lambda dst: False, fsync=True)  # the manifest's commit fails
    res = run_export("onnx", tiny_checkpoint, "--out", out, "--force", "--max-batch", "2", "--max-new-tokens", "8")
    assert res.exit_code == 1, res.output
    assert [line for line in res.stderr.splitlines() if line.startswith("error:")] == \
        [f"error: writing {out}: {NO_SPACE}"], res.output
    assert "Traceback" not in res.output
    assert snapshot(out) == before and leftovers(tmp_path) == []
