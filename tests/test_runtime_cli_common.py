"""The options every command shares (runtime/cli_common.py) and the torch-free preset list."""

from __future__ import annotations

import logging

import click
import pytest
from click.testing import CliRunner

from runtime.cli_common import ChoiceList, Command, common_options, log_level, missing_package_message


def all_commands() -> dict[str, click.Command]:
    from bench.cli_speed import main as bench
    from bench.cli_quality import main as evaluate
    from bench.walkthrough import main as quickstart
    from export.cli import main as export
    from pvlm.cli_data import main as data
    from pvlm.cli_train import main as train
    from runtime.cli import main as describe

    return {"pvlm-data synth": data.commands["synth"], "pvlm-train": train, "pvlm-export onnx": export.commands["onnx"],
            "pvlm-export triton": export.commands["triton"], "pvlm-describe": describe, "pvlm-bench": bench,
            "pvlm-eval": evaluate, "pvlm-quickstart": quickstart}


@pytest.mark.parametrize("name", list(all_commands()))
def test_every_command_has_the_shared_options(name):
    cmd = all_commands()[name]
    opts = {o for p in cmd.params for o in p.opts}
    assert {"--version", "-v", "--verbose", "-q", "--quiet"} <= opts, name
    # -h: tests/test_runtime_cli_torch_free.py runs every command and subcommand with it
    for p in cmd.params:
        if "--batch" in p.opts:
            assert p.hidden, "--batch is the deprecated spelling of --batch-size"
        if p.name in ("preset", "backends", "backend"):
            assert isinstance(p.type, click.Choice), (name, p.name)


def test_preset_names_without_torch_match_the_model():
    from pvlm.model import PRESETS
    from pvlm.preset_names import preset_names

    assert preset_names() == tuple(PRESETS)


def test_verbosity_levels():
    assert log_level(logging.WARNING, 0, False) == logging.WARNING
    assert log_level(logging.WARNING, 1, False) == logging.INFO
    assert log_level(logging.WARNING, 5, False) == logging.DEBUG
    assert log_level(logging.INFO, 2, True) == logging.ERROR


def test_choice_list_and_one_line_usage_errors():
    @click.command(cls=Command)
    @click.option("--backend", "backends", multiple=True, type=ChoiceList(["a", "b"]))
    @common_options()
    def cmd(backends, quiet):
        click.echo(f"{'|'.join(backends)} quiet={quiet}")

    ok = CliRunner().invoke(cmd, ["--backend", "a,b", "--backend", "b", "-q"])
    assert ok.exit_code == 0 and ok.stdout.strip() == "a,b|b quiet=True"
    bad = CliRunner().invoke(cmd, ["--backend", "a,c"])
    assert bad.exit_code == 2 and bad.stderr.splitlines() == [bad.stderr.splitlines()[0]]
    assert bad.stderr.startswith("error: ") and "'c' is not one of 'a', 'b'" in bad.stderr


def test_missing_package_becomes_one_line():
    @click.command(cls=Command)
    @common_options()
    def cmd():
        import torch_that_is_not_there  # noqa: F401

    assert missing_package_message("torch.nn") == "this command needs PyTorch: pip install 'personvlm-toolkit[torch]'"
    assert missing_package_message("tritonclient.grpc").endswith("[serve]'")
    assert missing_package_message("numpy") is None
    res = CliRunner().invoke(cmd, [])
    assert isinstance(res.exception, ModuleNotFoundError)  # not an optional package: a real bug, not hidden
