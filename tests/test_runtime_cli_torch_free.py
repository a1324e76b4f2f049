"""A runtime-only install runs every command that does not need PyTorch (issue 17).

Each command runs in a subprocess whose ``sitecustomize`` makes torch, torchvision and timm
unimportable (as if ``pip install personvlm-toolkit[cpu]`` without ``[torch]``); it applies to
the benchmark's worker processes too. Commands that do need PyTorch say so in one line, exit 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
BLOCKER = '''
import sys

class _NoTorch:
    """A runtime-only install: these packages are not there."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "timm"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoTorch())
'''
COMMANDS = {
    "pvlm-data": "pvlm.cli_data", "pvlm-train": "pvlm.cli_train", "pvlm-export": "export.cli",
    "pvlm-describe": "runtime.cli", "pvlm-bench": "bench.cli_speed", "pvlm-eval": "bench.cli_quality",
    "pvlm-quickstart": "bench.walkthrough", "pvlm-serve": "runtime.serving.server",
}


@pytest.fixture(scope="module")
def no_torch_env(tmp_path_factory) -> dict[str, str]:
    site = tmp_path_factory.mktemp("no-torch")
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def run(env: dict[str, str], command: str, *args: str, cwd: Path | None = None, timeout: int = 300,
        stdin: str | None = None) -> subprocess.CompletedProcess:
    code = (f"import sys; sys.argv[0] = {command!r}; from {COMMANDS[command]} import main; "
            "assert 'torch' not in sys.modules; main()")
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout, input=stdin)


def test_blocker_blocks(no_torch_env):
    proc = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True, env=no_torch_env)
    assert proc.returncode == 1 and "No module named 'torch'" in proc.stderr


@pytest.mark.parametrize("command, sub", [(c, None) for c in COMMANDS] + [("pvlm-export", "onnx"),
                                                                          ("pvlm-export", "triton"),
                                                                          ("pvlm-data", "synth")])
def test_help_and_version(no_torch_env, command, sub):
    args = [sub] if sub else []
    proc = run(no_torch_env, command, *args, "-h")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"Usage: {command}")
    if sub is None:
        proc = run(no_torch_env, command, "--version")
        assert proc.returncode == 0 and proc.stdout.startswith(f"{command} "), proc.stderr


def test_data_synth(no_torch_env, tmp_path):
    proc = run(no_torch_env, "pvlm-data", "synth", "--out", tmp_path / "d", "--n", "6", "--size", "64x32", "-q")
    assert proc.returncode == 0, proc.stderr
    assert len((tmp_path / "d" / "train.jsonl").read_text().splitlines()) + \
        len((tmp_path / "d" / "val.jsonl").read_text().splitlines()) == 6


def test_describe(no_torch_env, tiny_bundle, tmp_path):
    from PIL import Image

    img = tmp_path / "a.png"
    Image.new("RGB", (32, 64), (200, 30, 30)).save(img)
    proc = run(no_torch_env, "pvlm-describe", tiny_bundle, tmp_path, "--json", "--backend", "onnxruntime-cpu")
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.splitlines()
    assert json.loads(line)["image"] == str(img)


def test_export_triton(no_torch_env, tiny_bundle, tmp_path):
    proc = run(no_torch_env, "pvlm-export", "triton", tiny_bundle, "--out", tmp_path / "repo", "-q")
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in (tmp_path / "repo").iterdir()} == {"pvlm_encoder", "pvlm_decoder", "pvlm_describer"}


def test_bench_runtime_backends(no_torch_env, tiny_bundle, tmp_path):
    proc = run(no_torch_env, "pvlm-bench", tiny_bundle, "--backend", "onnxruntime-cpu", "onnxruntime-cpu-portable",
               "--batch-size", "1", "--new-tokens", "2", "--iters", "1", "--warmup", "0", "-q",
               "--csv", tmp_path / "b.csv")
    assert proc.returncode == 0, proc.stderr
    assert "onnxruntime-cpu-portable vs onnxruntime-cpu" not in proc.stdout or "x throughput" in proc.stdout
    assert "onnxruntime-cpu" in (tmp_path / "b.csv").read_text()


def test_eval_without_reference(no_torch_env, tiny_bundle, synth_dir):
    proc = run(no_torch_env, "pvlm-eval", tiny_bundle, synth_dir / "val.jsonl", "--no-reference", "--no-meteor",
               "--limit", "4", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "parity: not measured (reference comparison disabled)" in proc.stdout
    proc = run(no_torch_env, "pvlm-eval", tiny_bundle, synth_dir / "val.jsonl", "--no-meteor", "--limit", "2", "-q")
    assert proc.returncode == 0, proc.stderr  # the reference is skipped, and the report says why
    assert "parity: not measured (the PyTorch reference needs torch" in proc.stdout


@pytest.mark.parametrize("command, args", [
    ("pvlm-train", ["train.jsonl"]),
    ("pvlm-export", ["onnx", "model.pt"]),
    ("pvlm-bench", ["--preset", "tiny", "--backend", "onnxruntime-cpu", "-q"]),
    ("pvlm-eval", ["model.pt", "data.jsonl", "-q"]),
    ("pvlm-quickstart", ["--out", "qs", "-q"]),
])
def test_torch_commands_say_what_to_install(no_torch_env, tmp_path, command, args):
    if command == "pvlm-eval":  # a checkpoint and data that exist, so the first thing missing is torch
        (tmp_path / "model.pt").write_bytes(b"\0")
        (tmp_path / "data.jsonl").write_text('{"image": "x.png", "answer": "a man"}\n')
        from PIL import Image

        Image.new("RGB", (32, 64)).save(tmp_path / "x.png")
    proc = run(no_torch_env, command, *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: this command needs PyTorch: pip install 'personvlm-toolkit[torch]'"], proc.stderr
