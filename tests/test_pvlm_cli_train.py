"""The ``pvlm-train`` CLI (pvlm.cli_train.main) through click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")

from pvlm import load_checkpoint  # noqa: E402
from runtime.cli_common import parse_size  # noqa: E402
from pvlm.cli_train import main  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _args(synth_dir: Path, out: Path, *extra: str) -> list[str]:
    return [str(synth_dir / "train.jsonl"), "--val", str(synth_dir / "val.jsonl"), "--out", str(out),
            "--preset", "tiny", "--epochs", "1", "--batch-size", "8", "--min-freq", "1", "--device", "cpu",
            "--quiet", *extra]


def test_tiny_run_succeeds_and_prints_checkpoint(synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(main, _args(synth_dir, out, "--image-size", "64x32", "--attribute-weight", "0.25",
                                            "--backbone-lr-scale", "0.5"))
    assert result.exit_code == 0, result.output
    best = out / "best.pt"
    assert f"best checkpoint: {best}" in result.output
    assert f"last checkpoint: {out / 'last.pt'}" in result.output
    assert "unigram baseline" in result.output
    model, vocab, meta = load_checkpoint(best)
    assert model.cfg.image_size == (64, 32) and meta["preset"] == "tiny" and len(vocab) == model.cfg.vocab_size
    assert (out / "history.json").is_file()
    options = json.loads(meta["train_config"])
    assert options["attribute_weight"] == 0.25 and options["backbone_lr_scale"] == 0.5


def test_missing_train_file_is_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    result = CliRunner().invoke(main, [str(missing), "--out", str(tmp_path / "o"), "--preset", "tiny", "--quiet"])
    assert result.exit_code == 2
    assert result.output.startswith("error:")
    assert str(missing) in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o" / "best.pt").exists()


@pytest.mark.parametrize("size", ["64by32", "64x", "abc"])
def test_unparseable_image_size_is_exit_2(size: str, synth_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, _args(synth_dir, tmp_path / "o", "--image-size", size))
    assert result.exit_code == 2
    assert result.output.startswith("error:") and "--image-size" in result.output


def test_image_size_not_multiple_of_32_is_exit_2(synth_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, _args(synth_dir, tmp_path / "o", "--image-size", "64x33"))
    assert result.exit_code == 2
    assert result.output.startswith("error:") and "multiples of 32" in result.output
    assert not (tmp_path / "o" / "best.pt").exists()


def test_bad_preset_is_usage_error(synth_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [str(synth_dir / "train.jsonl"), "--preset", "huge"])
    assert result.exit_code == 2 and "huge" in result.output


def test_parse_size() -> None:
    assert parse_size("256x128", "--x") == (256, 128)
    assert parse_size(" 64 X 32 ", "--x") == (64, 32)
