"""``pvlm-describe`` against a hostile environment: a FIFO among the images, a full disk or a closed pipe
on stdout, file names with tabs and newlines, paths on stdin with leading and trailing spaces."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
DESCRIBE = "import sys; sys.argv[0] = 'pvlm-describe'; from runtime.cli import main; main()"


def describe_process(*args, timeout: float = 180, **kwargs) -> subprocess.CompletedProcess:
    """``pvlm-describe ARGS`` in a fresh interpreter (stdout and stderr captured unless given)."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    return subprocess.run([sys.executable, "-c", DESCRIBE, *map(str, args)], check=False, stderr=subprocess.PIPE,
                          text=True, cwd=ROOT, timeout=timeout, **kwargs)


def run_cli(*args, stdin=None):
    from runtime.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], input=stdin)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("hostile")
    paths = []
    for i in range(3):
        p = d / f"img{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (64, 32, 3), np.uint8)).save(p)
        paths.append(p)
    return paths


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
def test_fifo_among_images_is_one_error_and_the_rest_are_described(tiny_bundle, images, tmp_path):
    fifo = tmp_path / "camera.png"
    os.mkfifo(fifo)
    try:
        proc = describe_process(tiny_bundle, images[0], fifo, images[1], "--backend", "onnxruntime-cpu",
                                "--batch-size", "2")
    except subprocess.TimeoutExpired:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # let the stuck reader go
        pytest.fail("pvlm-describe blocked on a FIFO among its images")
    assert proc.returncode == 1, proc.stderr
    assert [line.split("\t")[0] for line in proc.stdout.splitlines()] == [str(images[0]), str(images[1])]
    assert "Traceback" not in proc.stderr
    named = [line for line in proc.stderr.splitlines() if "camera.png" in line]
    assert named == [f"error: input 1 ({fifo}): is a FIFO, not a regular file"], proc.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("fmt", [["--json"], []])
def test_full_disk_on_stdout_is_one_line(tiny_bundle, images, fmt):
    """``pvlm-describe --json > file`` on a full disk: one line naming stdout and the cause, exit 1."""
    with open("/dev/full", "w") as full:
        proc = describe_process(tiny_bundle, *images, "--backend", "onnxruntime-cpu", *fmt, stdout=full)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == ["error: writing stdout: No space left on device"], proc.stderr


def test_closed_pipe_on_stdout_ends_quietly(tiny_bundle, images):
    """``pvlm-describe ... | head -1``: once the reader is gone, stop with exit 1 and nothing on stderr."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = describe_process(tiny_bundle, *images, "--backend", "onnxruntime-cpu", "--batch-size", "1",
                                stdout=write)
    finally:
        os.close(write)
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr


def test_tabs_and_newlines_in_file_names_cannot_forge_lines_or_columns(tiny_bundle, images, tmp_path):
    names = ["a\tb.png", "two\nlines.png", 'quote"d.png', "plain.png"]
    paths = []
    for name, src in zip(names, [*images, images[0]]):
        (tmp_path / name).write_bytes(src.read_bytes())
        paths.append(tmp_path / name)
    res = run_cli(tiny_bundle, *paths, "--backend", "onnxruntime-cpu")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert len(lines) == 4 and all(len(line.split("\t")) == 3 for line in lines)
    first = [line.split("\t")[0] for line in lines]
    assert first == [f'"{tmp_path}/a\\tb.png"', f'"{tmp_path}/two\\nlines.png"', f'{tmp_path}/quote"d.png',
                     f"{tmp_path}/plain.png"]
    missing = run_cli(tiny_bundle, tmp_path / "gone\n.png", "--backend", "onnxruntime-cpu")
    assert missing.exit_code == 2
    assert missing.stderr.splitlines() == [f'error: input 0 ("{tmp_path}/gone\\n.png"): file not found']


def test_quote_path_escapes():
    from runtime.preprocess import quote_path

    assert quote_path("crops/cam 1/ä.png") == "crops/cam 1/ä.png"
    assert quote_path("a\tb\nc\rd\\e") == '"a\\tb\\nc\\rd\\\\e"'
    assert quote_path('"x') == '"\\"x"'
    assert quote_path("bell\x07") == '"bell\\x07"'
    assert quote_path(os.fsdecode(b"bad\xff.png")) == '"bad\\xff.png"'  # an undecodable byte, as the byte


def test_stdin_paths_keep_leading_and_trailing_spaces(tiny_bundle, images, tmp_path):
    spaced = [tmp_path / " lead.png", tmp_path / "trail.png ", tmp_path / "  both  .png"]
    for p, src in zip(spaced, images):
        p.write_bytes(src.read_bytes())
    stdin = "".join(f"{p}\n" for p in spaced[:2]) + f"{spaced[2]}\r\n" + "\n"
    res = run_cli(tiny_bundle, "-", "--backend", "onnxruntime-cpu", stdin=stdin)
    assert res.exit_code == 0, res.output
    assert [line.split("\t")[0] for line in res.stdout.splitlines()] == [str(p) for p in spaced]


def test_stdin_path_only_drops_the_line_ending():
    from runtime.cli import expand_inputs, stdin_path

    assert stdin_path("  a b.png  \n") == "  a b.png  "
    assert stdin_path(b" x.png\r\n") == " x.png"
    assert stdin_path(b"bad\xff.png\n") == os.fsdecode(b"bad\xff.png")
    assert list(expand_inputs(["-"], stdin=[" a.png\n", "\n", "b.png"])) == [" a.png", "b.png"]
