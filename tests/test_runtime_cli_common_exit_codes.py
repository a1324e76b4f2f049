"""The error contract: exit 2 for bad usage or unusable input (nothing described), exit 1 when some inputs
of a batch failed; one ``error:`` line each, in our words (no torch advice, no torch warnings)."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

torch = pytest.importorskip("torch")


def describe_cli(*args):
    from runtime.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def good_png(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("img") / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 32, 3), np.uint8)).save(p)
    return p


def test_describe_exit_codes(tiny_bundle, good_png, tmp_path):
    pytest.importorskip("onnxruntime")
    ghost, junk = tmp_path / "ghost.png", tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    assert describe_cli(tiny_bundle, good_png).exit_code == 0
    some = describe_cli(tiny_bundle, good_png, ghost)
    assert some.exit_code == 1 and some.stdout.startswith(str(good_png)), some.output
    none = describe_cli(tiny_bundle, ghost, junk)
    assert none.exit_code == 2, none.output
    errs = [line for line in none.stderr.splitlines() if line.startswith("error:")]
    assert len(errs) == 2 and "ghost.png" in errs[0] and "junk.png" in errs[1]
    assert none.stdout == ""


def test_exit_codes_are_documented():
    from runtime.cli import main

    text = CliRunner().invoke(main, ["--help"]).output
    assert "1 some images failed" in text and "2 bad usage" in text
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    assert "exit 2 for bad usage or unusable input" in readme and "exit 1 when some inputs of a batch failed" in readme


def _evil(tmp_path: Path) -> Path:
    import types

    mod = types.ModuleType("evil_mod2")

    class Payload:
        pass

    Payload.__module__, Payload.__qualname__ = "evil_mod2", "Payload"
    mod.Payload = Payload
    sys.modules["evil_mod2"] = mod
    try:
        path = tmp_path / "evil.pt"
        torch.save({"config": Payload(), "state_dict": {}}, path)
    finally:
        del sys.modules["evil_mod2"]
    return path


@pytest.mark.parametrize("kind", ["pickled-class", "noise0", "noise1", "noise2"])
def test_checkpoint_errors_in_our_own_words(kind, tmp_path):
    """torch's message ends in advice to re-run with weights_only=False; ours must not pass that on."""
    from export.cli import main

    if kind == "pickled-class":
        path = _evil(tmp_path)
    else:
        rng = random.Random(int(kind[-1]))
        path = tmp_path / "noise.pt"
        path.write_bytes(rng.randbytes(rng.choice([1, 2, 7, 64, 2048])))
    res = CliRunner().invoke(main, ["onnx", str(path), "--out", str(tmp_path / "b")])
    assert res.exit_code == 2, res.output
    errs = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errs) == 1 and str(path) in errs[0]
    for leak in ("Re-running", "weights_only", "torch.", "\x1b["):
        assert leak not in res.output
    if kind == "pickled-class":
        assert "evil_mod2.Payload" in errs[0] and "run code" in errs[0]


def test_no_torch_warnings_on_stderr(tmp_path):
    """A real console run: nothing but our one line reaches stderr."""
    path = tmp_path / "noise.pt"
    path.write_bytes(random.Random(0).randbytes(7))
    code = textwrap.dedent("""
        import sys
        from export.cli import main
        sys.argv = ["pvlm-export", "onnx", sys.argv[1], "--out", sys.argv[2]]
        main()
    """)
    res = subprocess.run([sys.executable, "-W", "default", "-c", code, str(path), str(tmp_path / "b")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip() and not line.startswith("exporting ")]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
