"""The content hash binds the manifest to its graphs: an edited vocabulary, preprocessing, model config, limits
or graph entry is one BundleError naming the section, a manifest from before content hashes is refused with
"re-export", and the hash is RFC 8785 canonical JSON that another language can recompute."""

from __future__ import annotations

import hashlib

import pytest
from click.testing import CliRunner
from PIL import Image

from runtime.bundle import HASHED_SECTIONS, Bundle, BundleError, Manifest, canonical_json
from manifest_json import read, write  # noqa: E402




def describe_cli(*args):
    from runtime.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(res) -> str:
    assert res.exit_code == 2, res.output
    errs = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errs) == 1 and "Traceback" not in res.output, res.output
    return errs[0]


def test_export_records_the_content_hash_load_checks(tiny_bundle):
    m = Bundle.load(tiny_bundle).manifest
    recorded = read(tiny_bundle)["content_hash"]
    assert recorded == m.compute_content_hash() == m.content_hash
    assert recorded["algorithm"] == "sha256-jcs"
    assert set(recorded["sections"]) == set(HASHED_SECTIONS)
    assert set(recorded["graphs"]) == set(m.graphs)


def test_a_swapped_vocabulary_is_refused_not_described(bundle_copy, tmp_path):
    """Swapping two words of the vocabulary would silently turn every "man" into "woman" (exit 0)."""
    m = read(bundle_copy)
    tokens = m["vocab"]["tokens"]
    a, b = tokens.index("man"), tokens.index("woman")
    tokens[a], tokens[b] = tokens[b], tokens[a]
    write(bundle_copy, m)
    with pytest.raises(BundleError, match=r"content hash mismatch in vocab: .*re-export") as e:
        Bundle.load(bundle_copy)
    assert "\n" not in str(e.value)
    img = tmp_path / "crop.png"
    Image.new("RGB", (32, 64), (40, 60, 200)).save(img)
    assert "content hash mismatch in vocab" in one_error_line(describe_cli(bundle_copy, img))


def _edit(m: dict, section: str) -> None:
    if section == "vocab":
        m["vocab"]["tokens"][-1] = "edited"
    elif section == "preprocess":
        m["preprocess"]["note"] = "any key of the section counts"
    elif section == "model":
        m["model"]["backbone"] = "mobilevit_xs"
    elif section == "limits":
        m["limits"]["max_batch"] = 4096
    elif section == "graphs.decoder":
        m["graphs"]["decoder"]["outputs"]["logits"]["shape"][0] = "rows"


@pytest.mark.parametrize("section", ["vocab", "preprocess", "model", "limits", "graphs.decoder"])
def test_each_edited_section_is_named(bundle_copy, section):
    m = read(bundle_copy)
    _edit(m, section)
    write(bundle_copy, m)
    with pytest.raises(BundleError) as e:
        Bundle.load(bundle_copy)
    assert str(e.value).endswith(f"content hash mismatch in {section}: the manifest was changed after export; "
                                 "re-export the bundle"), str(e.value)
    Bundle.load(bundle_copy, verify=False)  # a consistent manifest: verify=False trusts it as it is


def test_a_swapped_graph_file_and_its_sha256_are_refused(bundle_copy):
    """Another model's graph with its sha256 listed: the manifest's vocabulary no longer belongs to it."""
    m = read(bundle_copy)
    (bundle_copy / "decoder.onnx").write_bytes((bundle_copy / "decoder.onnx").read_bytes() + b"\x00")
    m["artifacts"]["decoder.onnx"]["sha256"] = hashlib.sha256((bundle_copy / "decoder.onnx").read_bytes()).hexdigest()
    write(bundle_copy, m)
    with pytest.raises(BundleError, match="content hash mismatch in graphs.decoder"):
        Bundle.load(bundle_copy)


def test_a_manifest_without_content_hash_is_refused_with_reexport(bundle_copy):
    m = read(bundle_copy)
    del m["content_hash"]
    write(bundle_copy, m)
    with pytest.raises(BundleError, match="has no content_hash .*re-export the bundle .*verify=False") as e:
        Bundle.load(bundle_copy)
    assert "\n" not in str(e.value)
    assert Bundle.load(bundle_copy, verify=False).manifest.content_hash is None


@pytest.mark.parametrize("bad", [[], {"algorithm": "md5"}, {"algorithm": "sha256-jcs", "sections": {"vocab": "zz"},
                                                              "graphs": {}}])
def test_a_malformed_content_hash_is_an_invalid_manifest(bundle_copy, bad):
    m = read(bundle_copy)
    m["content_hash"] = bad
    write(bundle_copy, m)
    with pytest.raises(BundleError, match="invalid manifest: content_hash"):
        Bundle.load(bundle_copy, verify=False)


def test_unhashed_sections_and_removed_optional_graphs_keep_the_bundle_valid(bundle_copy):
    """Engines, source, verification and variants are not hashed (their files have sha256); a bundle without
    the ONNX Runtime graph pair still verifies (the runtime runs the portable decoder)."""
    m = read(bundle_copy)
    m["source"]["checkpoint"] = "moved.pt"
    m["verification"]["export_seconds"] = 0
    for graph in ("cross_ort", "decoder_ort"):
        del m["graphs"][graph], m["artifacts"][f"{graph}.onnx"]
    write(bundle_copy, m)
    assert set(Bundle.load(bundle_copy).manifest.graphs) == {"encoder", "decoder"}


def test_the_builders_and_the_writer_reseal(bundle_copy):
    from export.manifest import write_manifest

    m = Bundle.load(bundle_copy).manifest
    write_manifest(bundle_copy, m.with_source("elsewhere.pt", {"epoch": 1}))
    assert Bundle.load(bundle_copy).manifest.source_checkpoint == "elsewhere.pt"
    edited = read(bundle_copy)
    edited["preprocess"]["mean"] = edited["model"]["mean"] = [0.5, 0.5, 0.5]
    write_manifest(bundle_copy, edited)  # export's writer records the hash of what it writes
    assert Bundle.load(bundle_copy).preprocessing.mean == (0.5, 0.5, 0.5)


def test_content_hash_is_sha256_of_rfc8785_canonical_json(tiny_bundle):
    m = read(tiny_bundle)
    for section in HASHED_SECTIONS:
        assert m["content_hash"]["sections"][section] == hashlib.sha256(canonical_json(m[section])).hexdigest()
    entry = {**m["graphs"]["encoder"], "sha256": m["artifacts"]["encoder.onnx"]["sha256"]}
    assert m["content_hash"]["graphs"]["encoder"] == hashlib.sha256(canonical_json(entry)).hexdigest()


@pytest.mark.parametrize("value, text", [
    ({"b": [1.0, 1e-05, "x\n\u00e9"], "a": True, "c": None}, '{"a":true,"b":[1,0.00001,"x\\n\u00e9"],"c":null}'),
    ([1e21, 1e-7, 1e16, 0.1, -0.0, 1 / 255, 5e-324], "[1e+21,1e-7,10000000000000000,0.1,0,0.00392156862745098,5e-324]"),
    ({"\uff61": 1, "\U0001f600": 2, "\u20ac": 3}, '{"\u20ac":3,"\U0001f600":2,"\uff61":1}'),  # UTF-16 order
    ("\x01\x1f\"\\/", '"\\u0001\\u001f\\"\\\\/"'),
])
def test_canonical_json_matches_rfc8785(value, text):
    assert canonical_json(value) == text.encode("utf-8")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 2**53 + 1, "\ud800", {1: 2}])
def test_canonical_json_refuses_what_it_cannot_represent(value):
    with pytest.raises(ValueError):
        canonical_json(value)


def test_content_hash_of_an_unhashable_section_is_a_bundle_error(tiny_bundle):
    m = read(tiny_bundle)
    m["model"]["huge"] = 2**60
    with pytest.raises(BundleError, match="model: cannot be hashed"):
        Manifest.from_dict(m).compute_content_hash()
