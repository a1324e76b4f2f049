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


@pytest.fixture()
def bundle_copy(tiny_bundle, tmp_path) -> Path:
    """A copy of the tiny bundle that a test may damage."""
    import shutil

    dst = tmp_path / "b"
    shutil.copytree(tiny_bundle, dst)
    return dst


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


@pytest.fixture
def pg_url() -> str:
    """A PostgreSQL database for store tests (``PVLM_TEST_PG_URL``, started by ``.ci/postgres.sh``), its
    description table dropped; skips, saying why, without a reachable server or psycopg."""
    import os

    url = os.environ.get("PVLM_TEST_PG_URL")
    if not url:
        pytest.skip("no PostgreSQL server: PVLM_TEST_PG_URL is not set (source .ci/postgres.sh)")
    psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install '.[search]')")
    try:
        with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS pvlm_descriptions, pvlm_alternatives")
    except psycopg.OperationalError as e:
        pytest.skip(f"PostgreSQL at {url} cannot be reached: {e}")
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def store_location(request, tmp_path) -> str:
    """Where an empty description store goes: a SQLite file, then a PostgreSQL database (:func:`pg_url`)."""
    return str(tmp_path / "d.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")


@pytest.fixture(scope="module")
def native_cli() -> Path:
    """``pvlm-describe-native`` built by ``.ci/native.sh`` (built here when missing); skips, saying why, when it
    cannot be built."""
    from runtime.native.compile import BuildUnavailable, build

    try:
        native = build("release")
    except BuildUnavailable as e:
        pytest.skip(f"native runtime not built: {e}")
    if native.cli is None:
        pytest.skip("pvlm-describe-native was not built (libpng or libjpeg missing: apt-get install libpng-dev "
                    "libjpeg-dev)")
    return native.cli
