"""``runtime.cli_common``: an OSError is one ``error:`` line, never a traceback; ``writing(TARGET)`` names the
output and sorts the cause (the system's: exit 1; the path's: exit 2); a closed pipe ends quietly."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from runtime.cli_common import CONTEXT_SETTINGS, Command, common_options, writing

ROOT = Path(__file__).resolve().parents[1]


def command(body):
    @click.command(cls=Command, context_settings=CONTEXT_SETTINGS)
    @common_options()
    def cmd() -> None:
        body()

    return cmd


def raiser(exc: BaseException):
    def body():
        raise exc

    return body


@pytest.mark.parametrize("exc, code, line", [
    (OSError(errno.ENOSPC, "No space left on device"), 1, "error: writing out.json: No space left on device"),
    (OSError(errno.EIO, "Input/output error", "/x/y"), 1, "error: writing out.json: Input/output error"),
    (PermissionError(errno.EACCES, "Permission denied", "/x/.out.json.tmp"), 2,
     "error: writing out.json: Permission denied"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "out.json"), 2, "error: writing out.json: Is a directory"),
])
def test_writing_names_the_output_and_the_cause(exc, code, line):
    def body():
        with writing("out.json"):
            raise exc

    res = CliRunner().invoke(command(body), [])
    assert res.exit_code == code
    assert res.stderr.splitlines() == [line]


def test_any_other_os_error_is_one_line_not_a_traceback():
    res = CliRunner().invoke(command(raiser(OSError(errno.EIO, "Input/output error", "/data/x.jsonl"))), [])
    assert res.exit_code == 1
    assert res.stderr.splitlines() == ["error: /data/x.jsonl: Input/output error"]
    res = CliRunner().invoke(command(raiser(OSError(errno.ENOSPC, "No space left on device"))), [])
    assert res.exit_code == 1 and res.stderr.splitlines() == ["error: No space left on device"]


def test_writing_lets_a_closed_pipe_through():
    def body():
        with writing("stdout"):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    res = CliRunner().invoke(command(body), [])
    assert res.exit_code == 1 and res.stderr == ""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_unflushed_stdout_on_a_full_disk_is_reported_once():
    """Output still buffered when the command returns is flushed while an error can be reported: one line,
    exit 1, and no second failure ("Exception ignored ...") when Python exits."""
    code = textwrap.dedent("""
        import sys, click
        from runtime.cli_common import Command, common_options
        @click.command(cls=Command)
        @common_options()
        def cmd():
            sys.stdout.write("still buffered\\n")
        cmd()
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout block-buffered, as usual
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-c", code], check=False, stdout=full, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT, env=env, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == ["error: writing stdout: No space left on device"], proc.stderr
