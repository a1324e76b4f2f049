"""Decoding flags of ``pvlm-describe``, the repetition guard and the minimum crop size."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("onnxruntime")


def run_cli(*args):
    from runtime.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "red.png"
    Image.fromarray(np.full((96, 48, 3), (220, 20, 20), np.uint8)).save(path)
    return str(path)


def test_json_carries_ranked_alternatives(tiny_bundle, image):
    r = run_cli(tiny_bundle, image, "--json", "--beams", 3, "--n-best", 2, "--max-new-tokens", 8, "--tokens")
    assert r.exit_code == 0, r.output
    rec = json.loads(r.output.splitlines()[0])
    alts = rec["alternatives"]
    assert len(alts) == 2 and alts[0]["score"] >= alts[1]["score"]
    assert alts[0]["text"] == rec["text"] and alts[0]["tokens"] == rec["tokens"] and "attributes" in alts[0]
    jsonschema = pytest.importorskip("jsonschema", reason="the dev extra installs jsonschema")
    from runtime.description_schema import description_schema

    jsonschema.validate(rec, description_schema())  # the bundle's schema describes the line


def test_seeded_sampling_is_reproducible(tiny_bundle, image):
    args = (tiny_bundle, image, image, "--json", "--sample", "--top-k", 10, "--seed", 5, "--max-new-tokens", 8)
    first, second = run_cli(*args), run_cli(*args)
    assert first.exit_code == 0, first.output
    texts = [json.loads(x)["text"] for x in first.output.splitlines()]
    assert texts == [json.loads(x)["text"] for x in second.output.splitlines()]


@pytest.mark.parametrize("flags, msg", [
    (("--beams", 0), "beams must be an integer >= 1"),
    (("--sample", "--top-p", 1.5), "top_p must be in (0, 1]"),
    (("--sample", "--temperature", -1), "temperature must be > 0"),
])
def test_bad_decoding_flags_one_line(tiny_bundle, image, flags, msg):
    r = run_cli(tiny_bundle, image, *flags)
    assert r.exit_code == 2 and msg in r.output and len(r.output.strip().splitlines()) == 1


def test_repetition_guard_ends_a_loop(tiny_bundle):
    from runtime import Describer
    from runtime.decoding import DecodingOptions

    with Describer(tiny_bundle, threads=1) as d:
        h, w = d._pre[:2]
        pixels = np.random.default_rng(0).standard_normal((4, 3, h, w)).astype(np.float32)
        raw, _ = d.generate_ids(pixels, 24)
        guarded, _ = d.generate(pixels, DecodingOptions(no_repeat_ngram_size=3), 24)
    for ids, hyp in zip(raw, guarded):
        grams = [tuple(hyp[0].tokens[i:i + 3]) for i in range(len(hyp[0].tokens) - 2)]
        assert len(grams) == len(set(grams)) and ids[:len(hyp[0].tokens)] == hyp[0].tokens


def test_min_crop_refuses_tiny_boxes(tiny_bundle):
    from runtime import Describer

    frame = np.full((200, 100, 3), 128, np.uint8)
    with Describer(tiny_bundle, threads=1, channel_order="rgb", max_new_tokens=4) as d:
        tiny, ok = d.describe_crops(frame, [(10, 10, 11, 11), (0, 0, 60, 120)])
        assert "smaller than the minimum crop" in tiny.error and ok.ok
    with Describer(tiny_bundle, threads=1, channel_order="rgb", max_new_tokens=4, min_crop=0) as d:
        assert d.describe_crops(frame, [(10, 10, 11, 11)])[0].ok
