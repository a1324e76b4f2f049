"""Native against Python on a real-size preset: a ``lite0`` bundle (ImageNet backbone, the rest random-init; 192x96 input,
max batch 32), FP32, 64 crops in batches of 32. INT8 is compared on the tiny preset (test_native_parity.py):
building and verifying lite0's INT8 variant takes over five minutes on two cores, beyond this suite's budget.

The native program runs the encoder in smaller chunks than the Python runtime by default (2 x 224 x 224
input pixels against 8 x 224 x 224: 5 crops per call against 21 here), so this also checks that the
encoder's output for a crop does not depend on the crops beside it in a call.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_native_parity import run_cli  # noqa: E402

N_CROPS = 64


@pytest.fixture(scope="module")
def cli(native_cli: Path) -> Path:
    return native_cli


@pytest.fixture(scope="module")
def lite0_bundle(tmp_path_factory):
    from export import export_onnx
    from pvlm import PersonVLM, PersonVLMConfig, Vocabulary, save_checkpoint
    from pvlm.vocab import SPECIALS

    torch.manual_seed(0)
    # ImageNet weights: a random backbone gives every crop the same features, hence the same tokens
    cfg = PersonVLMConfig.preset("lite0", vocab_size=64, pretrained_backbone=True)
    vocab = Vocabulary(list(SPECIALS) + [f"w{i}" for i in range(60)])
    d = tmp_path_factory.mktemp("native-lite0")
    ckpt = save_checkpoint(d / "m.pt", PersonVLM(cfg).eval(), vocab)
    # verify=False: export's own parity check against PyTorch is tested elsewhere and costs minutes at this size
    return export_onnx(ckpt, d / "bundle", max_batch=32, max_new_tokens=16, verify=False)


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> list[str]:
    from pvlm.synth import synth_example

    d = tmp_path_factory.mktemp("lite0-crops")
    rng = np.random.default_rng(1)
    paths = []
    for i in range(N_CROPS):
        img = synth_example(21, i, (256, 128), True)[0].resize((int(rng.integers(24, 300)), int(rng.integers(48, 400))))
        paths.append(str(d / f"c{i:02d}.png"))
        img.save(paths[-1])
    return paths


def test_lite0_tokens_equal_the_python_describer(cli, lite0_bundle, crops, precision="fp32"):
    from runtime import Describer

    with Describer(lite0_bundle, backend="onnxruntime-cpu", threads=1, precision=precision) as d:
        python = d.describe(crops)  # in batches of the bundle's 32
    rc, native, stderr = run_cli(cli, lite0_bundle, crops, "--precision", precision, "--batch-size", "32")
    assert rc == 0, stderr
    same = sum(p.tokens == n["tokens"] for p, n in zip(python, native))
    print(f"lite0 {precision}: tokens equal for {same}/{len(crops)} crops")
    assert same == len(crops) and [p.text for p in python] == [n["text"] for n in native]
    assert len({tuple(p.tokens) for p in python}) > 4  # the crops are told apart


def test_lite0_encoder_chunk_does_not_change_tokens(cli, lite0_bundle, crops):
    _, default, _ = run_cli(cli, lite0_bundle, crops[:32], "--batch-size", "32")
    one_image = str(192 * 96)
    rc, single, stderr = run_cli(cli, lite0_bundle, crops[:32], "--batch-size", "32", "--encoder-chunk-pixels", one_image)
    assert rc == 0, stderr
    rc, whole, stderr = run_cli(cli, lite0_bundle, crops[:32], "--batch-size", "32", "--encoder-chunk-pixels",
                                str(32 * 192 * 96))
    assert rc == 0, stderr
    assert [r["tokens"] for r in single] == [r["tokens"] for r in default] == [r["tokens"] for r in whole]
    bad = subprocess.run([str(cli), str(lite0_bundle), crops[0], "--encoder-chunk-pixels", "0"], capture_output=True,
                         text=True, check=False)
    assert bad.returncode == 2 and "--encoder-chunk-pixels needs an integer >= 1" in bad.stderr
