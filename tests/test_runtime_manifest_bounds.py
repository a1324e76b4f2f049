"""What a manifest declares is checked against the rest of the bundle and bounded, even when whoever edited it
also recomputed its content hash: sizes against the graph contract and the ONNX files' own inputs and outputs,
every size against a documented maximum, and the JSON itself strict (no NaN, no duplicate keys, bounded size
and depth). Each refusal is one BundleError line; none is a traceback at describe time."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from runtime.bundle import (MAX_BATCH, MAX_IMAGE_SIDE, MAX_JSON_DEPTH, MAX_MANIFEST_BYTES, MAX_VOCAB, Bundle,
                            BundleError, Manifest, ModelConfig, Preprocessing)
from manifest_json import read, write  # noqa: E402

pytest.importorskip("onnxruntime")




def resealed(manifest: dict) -> dict:
    """The manifest with its content hash recomputed, as a determined editor would (schema-valid input only)."""
    return {**manifest, "content_hash": Manifest.from_dict(manifest).compute_content_hash()}


def refused(bundle: Path, *needles: str, verify: bool = True) -> str:
    with pytest.raises(BundleError) as e:
        Bundle.load(bundle, verify=verify)
    msg = str(e.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, msg
    return msg


def test_preprocess_size_that_does_not_match_the_encoder_is_refused(bundle_copy):
    """Before: accepted, then a traceback from ONNX Runtime at describe time."""
    m = read(bundle_copy)
    m["preprocess"]["height"] = 128
    m["model"]["image_size"] = [128, 32]
    write(bundle_copy, resealed(m))
    refused(bundle_copy, "graphs.encoder.inputs.pixels.shape[2] is 64, but preprocess.height is 128")
    refused(bundle_copy, "preprocess.height", verify=False)  # a manifest-only check: no graph is read


def test_a_grown_vocabulary_that_does_not_match_the_logits_is_refused(bundle_copy):
    m = read(bundle_copy)
    m["vocab"]["tokens"] += ["extra1", "extra2"]
    m["model"]["vocab_size"] += 2
    write(bundle_copy, resealed(m))
    refused(bundle_copy, "graphs.decoder.outputs.logits.shape[1] is 256", "vocabulary size")


@pytest.mark.parametrize("key, value, needle", [
    ("n_layers", 3, "model.n_layers is 3"),
    ("n_heads", 4, "model.n_heads is 4"),
    ("d_model", 128, "model.d_model / n_heads is 64"),
    ("vocab_size", 300, "model.vocab_size is 300, but vocab.tokens has 256 tokens"),
    ("max_len", 32, "limits.max_positions is 64, but model.max_len is 32"),
])
def test_model_sizes_the_runtime_allocates_from_must_match_the_graphs(bundle_copy, key, value, needle):
    m = read(bundle_copy)
    m["model"][key] = value
    write(bundle_copy, m)  # unsealed: the consistency check comes first and says what disagrees
    refused(bundle_copy, needle)


def test_graph_entries_are_checked_against_the_onnx_files(bundle_copy):
    """A manifest consistent with itself (pixels 128 high everywhere) and resealed: the graph says 64."""
    m = read(bundle_copy)
    m["preprocess"]["height"] = 128
    m["model"]["image_size"] = [128, 32]
    m["graphs"]["encoder"]["inputs"]["pixels"]["shape"][2] = 128
    write(bundle_copy, resealed(m))
    refused(bundle_copy, "encoder.onnx: pixels is float32 ['batch', 3, 64, 32] in the graph, but "
                         "graphs.encoder.inputs.pixels is float32 ['batch', 3, 128, 32]")


def test_reordered_outputs_are_refused(bundle_copy):
    """run(None) returns outputs in graph order: a manifest listing them in another order would swap them."""
    m = read(bundle_copy)
    out = m["graphs"]["decoder"]["outputs"]
    m["graphs"]["decoder"]["outputs"] = {k: out[k] for k in reversed(list(out))}
    write(bundle_copy, resealed(m))
    refused(bundle_copy, "decoder.onnx: the graph's outputs are [logits, next_ids, new_k, new_v]")


def test_a_file_that_is_not_onnx_is_named(bundle_copy):
    import hashlib

    (bundle_copy / "encoder.onnx").write_bytes(b"\x08\x07garbage" * 100)
    m = read(bundle_copy)
    m["artifacts"]["encoder.onnx"]["sha256"] = hashlib.sha256((bundle_copy / "encoder.onnx").read_bytes()).hexdigest()
    write(bundle_copy, resealed(m))
    refused(bundle_copy, "encoder.onnx: not a readable ONNX model")


@pytest.mark.parametrize("path, value, needle", [
    (("limits", "max_batch"), 10**12, f"limits.max_batch: expected 1 to {MAX_BATCH}"),
    (("limits", "max_positions"), 10**9, "limits.max_positions: expected 1 to"),
    (("preprocess", "height"), 10**9, f"preprocess.height: expected 1 to {MAX_IMAGE_SIDE}"),
    (("preprocess", "width"), -1, "preprocess.width: expected 1 to"),
    (("preprocess", "std"), [1e-30, 1, 1], "preprocess.std: expected numbers from"),
    (("preprocess", "mean"), [1e300, 0, 0], "preprocess.mean: expected numbers from"),
    (("preprocess", "resize"), "letterbox", "preprocess.resize: \"letterbox\" is not supported"),
    (("preprocess", "channel_order"), "BGR", "preprocess.channel_order"),
    (("preprocess", "scale"), 1.0, "preprocess.scale"),
    (("model", "n_layers"), 10**4, "model.n_layers: expected 1 to"),
    (("model", "d_model"), 10**6, "model.d_model: expected 1 to"),
    (("model", "vocab_size"), 10**8, "model.vocab_size: expected 1 to"),
    (("model", "n_heads"), 0, "model.n_heads: expected 1 to"),
    (("special_tokens", "eos"), 5, "special_tokens.eos: expected 2"),
    (("graphs", "decoder", "inputs", "cache_k", "shape", 3), 10**12, "graphs.decoder.inputs.cache_k.shape[3]"),
    (("graphs", "decoder", "inputs", "tokens", "dtype"), "complex128", "graphs.decoder.inputs.tokens.dtype"),
])
def test_every_declared_size_is_bounded(bundle_copy, path, value, needle):
    m = read(bundle_copy)
    node = m
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    write(bundle_copy, m)
    refused(bundle_copy, needle, verify=False)


def test_a_vocabulary_past_the_limit_is_refused(bundle_copy):
    m = read(bundle_copy)
    m["vocab"]["tokens"] += [f"t{i}" for i in range(MAX_VOCAB)]
    write(bundle_copy, m)
    refused(bundle_copy, f"more than {MAX_VOCAB}", verify=False)


def test_vocabulary_shape(bundle_copy):
    good = (bundle_copy / "manifest.json").read_text()
    for edit, needle in ((lambda t: t.__setitem__(1, "<start>"), "must start with"),
                         (lambda t: t.__setitem__(10, ""), "vocab.tokens[10]"),
                         (lambda t: t.__setitem__(10, "x" * 1000), "vocab.tokens[10]"),
                         (lambda t: t.__setitem__(10, t[11]), "appears twice")):
        m = json.loads(good)
        edit(m["vocab"]["tokens"])
        write(bundle_copy, m)
        refused(bundle_copy, needle, verify=False)


def test_an_oversized_manifest_is_refused_before_it_is_parsed(bundle_copy):
    with open(bundle_copy / "manifest.json", "r+b") as f:
        f.truncate(MAX_MANIFEST_BYTES + 1)  # sparse: no disk used
    refused(bundle_copy, "byte limit", verify=False)


@pytest.mark.parametrize("text, needle", [
    ('{"format": "pvlm-bundle", "x": NaN}', "NaN is not JSON"),
    ('{"format": "pvlm-bundle", "x": -Infinity}', "-Infinity is not JSON"),
    ('{"format": "pvlm-bundle", "x": 1e400}', "1e400 is out of a double's range"),
    ('{"format": "pvlm-bundle", "format": "pvlm-bundle"}', "duplicate key"),
    ("\ufeff{}", "corrupt manifest"),
])
def test_manifest_json_is_strict(bundle_copy, text, needle):
    (bundle_copy / "manifest.json").write_text(text, encoding="utf-8")
    refused(bundle_copy, "corrupt manifest", needle, verify=False)


def test_nan_inside_a_real_manifest_is_refused(bundle_copy):
    text = (bundle_copy / "manifest.json").read_text().replace("0.485", "NaN", 1)
    (bundle_copy / "manifest.json").write_text(text)
    refused(bundle_copy, "NaN is not JSON", verify=False)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 900])
def test_deep_nesting_anywhere_is_refused_not_a_recursion_error(bundle_copy, depth):
    m = read(bundle_copy)
    m["engines"] = json.loads("[" * depth + "]" * depth)
    write(bundle_copy, m)
    refused(bundle_copy, "nested deeper than", verify=False)


def test_a_symlink_loop_is_refused(bundle_copy):
    (bundle_copy / "encoder.onnx").unlink()
    os.symlink("encoder.onnx", bundle_copy / "encoder.onnx")
    refused(bundle_copy, "encoder.onnx", "cannot be resolved", verify=False)


def test_typed_preprocessing_and_model_config(tiny_bundle, tiny_model):
    b = Bundle.load(tiny_bundle)
    pre, m = b.preprocessing, b.model_config
    assert isinstance(pre, Preprocessing) and isinstance(m, ModelConfig)
    assert (pre.height, pre.width) == tiny_model.cfg.image_size
    assert pre.mean == pytest.approx(tiny_model.cfg.mean) and pre.std == pytest.approx(tiny_model.cfg.std)
    assert (pre.channel_order, pre.resize, pre.interpolation, pre.layout) == ("RGB", "stretch", "bilinear", "NCHW")
    assert (m.n_layers, m.n_heads, m.d_model, m.head_dim, m.vocab_size, m.max_len) == (
        2, 2, 64, 32, len(b.tokens), tiny_model.cfg.max_len)
    assert b.manifest.preprocessing == pre and b.manifest.model_config == m
    assert b.preprocess["height"] == pre.height and b.model["n_layers"] == m.n_layers  # the dict API still works
    with pytest.raises(Exception):
        pre.height = 1  # type: ignore[misc]
    with pytest.raises(BundleError, match="preprocess.height"):
        Preprocessing.from_dict({**b.preprocess, "height": 0})
    with pytest.raises(BundleError, match="model.d_model"):
        ModelConfig.from_dict({**b.model, "d_model": 65})


def test_an_old_preprocess_section_gets_the_implemented_defaults(tiny_bundle):
    pre = {k: v for k, v in Bundle.load(tiny_bundle).preprocess.items() if k in ("height", "width", "mean", "std")}
    p = Preprocessing.from_dict(pre)
    assert (p.channel_order, p.resize, p.interpolation, p.scale, p.layout) == ("RGB", "stretch", "bilinear", 1 / 255,
                                                                                "NCHW")


def test_what_load_accepts_describes(bundle_copy, tmp_path):
    """An edit inside every bound (max batch 4096, a 1-token limit...) resealed: load accepts, describe works."""
    from runtime import Describer

    m = read(bundle_copy)
    m["limits"] = {"max_batch": MAX_BATCH, "max_new_tokens": 1, "max_positions": 64}
    m["preprocess"]["mean"] = m["model"]["mean"] = [1000, -1000, 0]
    m["preprocess"]["std"] = m["model"]["std"] = [0.001, 1000, 1]
    write(bundle_copy, resealed(m))
    img = tmp_path / "a.png"
    Image.new("RGB", (20, 50), (200, 10, 10)).save(img)
    with Describer(Bundle.load(bundle_copy), backend="onnxruntime-cpu") as d:
        out = d.describe([img])
    assert out[0].ok and len(out[0].tokens) <= 1
