"""Shared fixtures: tiny random-init model, checkpoint, exported bundle and a small synthetic dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the PyTorch side needs torch (pip install -e .[torch])")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Two shared CPU cores: one intra-op thread avoids oversubscription stalls (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_vocab():
    """A vocabulary of the tiny preset's size built from synthetic captions."""
    import numpy as np

    from pvlm import PersonVLMConfig, Vocabulary
    from pvlm.synth import caption, sample_attributes

    rng = np.random.default_rng(0)
    caps = [caption(sample_attributes(rng), rng) for _ in range(300)]
    size = PersonVLMConfig.preset("tiny").vocab_size
    vocab = Vocabulary.build(caps, min_freq=1, max_size=size)
    # pad to the preset's size so the tiny config needs no override
    extra = [f"xtok{i}" for i in range(size - len(vocab))]
    return Vocabulary(vocab.itos + extra)


@pytest.fixture(scope="session")
def tiny_model(tiny_vocab):
    """Random-init ``tiny`` preset model in eval mode (seeded)."""
    from pvlm import PersonVLM, PersonVLMConfig

    torch.manual_seed(0)
    return PersonVLM(PersonVLMConfig.preset("tiny", vocab_size=len(tiny_vocab))).eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_model, tiny_vocab, tmp_path_factory) -> Path:
    """The tiny model saved as a checkpoint."""
    from pvlm import save_checkpoint

    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", tiny_model, tiny_vocab, {"note": "fixture"})


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint, tmp_path_factory) -> Path:
    """The tiny checkpoint exported (and verified) to an ONNX bundle; max batch 8, 24 new tokens."""
    from export import export_onnx

    return export_onnx(tiny_checkpoint, tmp_path_factory.mktemp("bundle") / "tiny", max_batch=8, max_new_tokens=24)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A 48-image synthetic dataset (train.jsonl + val.jsonl) at 128x64."""
    from pvlm.synth import SynthConfig, write_dataset

    out = tmp_path_factory.mktemp("synth") / "data"
    write_dataset(out, SynthConfig(n=48, seed=1, size=(128, 64), val_fraction=0.25), progress=False)
    return out
