"""``pvlm-eval --html/--json-out`` on a full disk: one ``error: writing PATH: No space left on device`` line,
exit 1, and no report (nor temporary file) left at the path. The disk fills where the atomic writer commits
the file: ``os.fsync`` raises ``OSError(ENOSPC)``."""

from __future__ import annotations

import errno
import os

import pytest
from click.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("pycocoevalcap")

NO_SPACE = "No space left on device"


@pytest.mark.parametrize("option", ["--html", "--json-out"])
def test_report_on_a_full_disk_is_one_line(option, tiny_bundle, synth_dir, tmp_path, monkeypatch):
    from bench.cli_quality import main

    target = tmp_path / ("report.html" if option == "--html" else "report.json")

    def fsync(fd):
        raise OSError(errno.ENOSPC, NO_SPACE)

    monkeypatch.setattr(os, "fsync", fsync)
    res = CliRunner().invoke(main, [str(tiny_bundle), str(synth_dir / "val.jsonl"), "--limit", "2", "--quiet",
                                    "--no-meteor", "--no-reference", "--max-new-tokens", "4", option, str(target)])
    assert res.exit_code == 1, res.output
    assert res.stderr.splitlines() == [f"error: writing {target}: {NO_SPACE}"], res.output
    assert "caption metrics" in res.stdout  # the summary had been printed before the report was written
    assert list(tmp_path.iterdir()) == []
