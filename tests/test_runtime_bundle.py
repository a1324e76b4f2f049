"""The typed, validated :class:`runtime.bundle.Manifest`: wrong shapes are one BundleError line, every file the
manifest names stays inside the bundle (symlinks included), and a graph ONNX Runtime cannot parse is named."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from runtime.bundle import Bundle, BundleError, Manifest, sha256_path
from manifest_json import read, write  # noqa: E402




def describe_cli(*args):
    from runtime.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(res, *needles: str) -> str:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and res.exception is None or isinstance(res.exception, SystemExit)
    errs = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errs) == 1, res.stderr
    for n in needles:
        assert n in errs[0], errs[0]
    return errs[0]


def test_export_writes_what_the_reader_accepts(tiny_bundle):
    m = Bundle.load(tiny_bundle).manifest
    assert isinstance(m, Manifest)
    assert m.limits.max_batch == 8 and m.graphs["encoder"].file == "encoder.onnx"
    assert m.graphs["encoder"].inputs["pixels"].shape[0] == "batch"
    assert set(m.files()) >= {"encoder.onnx", "decoder.onnx"}
    with pytest.raises(Exception):  # frozen
        m.version = 2  # type: ignore[misc]


def test_export_refuses_to_write_an_invalid_manifest(tmp_path):
    from export.manifest import write_manifest

    with pytest.raises(BundleError, match="invalid manifest: model: missing"):
        write_manifest(tmp_path, {"format": "pvlm-bundle", "version": 1})
    assert not (tmp_path / "manifest.json").exists()


def _mutations(good: dict) -> list[tuple[str, object]]:
    """(what the error must name, a manifest of the wrong shape)."""
    out: list[tuple[str, object]] = [("JSON object", [1, 2, 3]), ("JSON object", "x"), ("JSON object", None)]

    def m(path: str, value, needle: str) -> None:
        d = copy.deepcopy(good)
        keys = path.split(".")
        node = d
        for k in keys[:-1]:
            node = node[k]
        if value is KeyError:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
        out.append((needle, d))

    m("graphs", KeyError, "graphs")
    m("graphs", [], "graphs")
    m("graphs.encoder", KeyError, "graphs.encoder")
    m("graphs.encoder.file", 3, "graphs.encoder.file")
    m("graphs.decoder.inputs", None, "graphs.decoder.inputs")
    m("graphs.decoder.outputs.logits", {"dtype": "float32"}, "graphs.decoder.outputs")
    m("vocab", KeyError, "vocab")
    m("vocab.tokens", "abc", "vocab.tokens")
    m("special_tokens.eos", 10**9, "special_tokens.eos")
    m("special_tokens.bos", "1", "special_tokens.bos")
    m("preprocess.height", 0, "preprocess.height")
    m("preprocess.mean", [0.5], "preprocess.mean")
    m("preprocess.std", [0, 1, 1], "preprocess.std")
    m("limits.max_batch", True, "limits.max_batch")
    m("limits", KeyError, "limits")
    m("artifacts", KeyError, "artifacts")
    m("version", 2, "version")
    m("format", "other", "format")
    return out


def test_wrong_shapes_are_one_line_bundle_errors(tiny_bundle):
    good = read(tiny_bundle)
    cases = _mutations(good)
    bad_art = copy.deepcopy(good)
    bad_art["artifacts"]["encoder.onnx"]["sha256"] = "zz"
    cases.append(("sha256", bad_art))
    unlisted = copy.deepcopy(good)
    del unlisted["artifacts"]["encoder.onnx"]
    cases.append(("no sha256 for encoder.onnx", unlisted))
    for needle, manifest in cases:
        with pytest.raises(BundleError) as e:
            Manifest.from_dict(manifest)
        msg = str(e.value)
        assert "\n" not in msg and needle in msg, (needle, msg)


def test_unknown_and_optional_keys_are_tolerated(bundle_copy):
    m = read(bundle_copy)
    m["variants"] = {"fp16": {"graphs": {"encoder": "encoder.onnx"}, "plan": {"x": 1}}}
    m["engines"] = [{"format": "tensorrt-plan", "graph": "encoder", "file": "encoder.onnx", "precision": "fp16",
                     "sha256": m["artifacts"]["encoder.onnx"]["sha256"], "bytes": 1, "trt": "10"}]
    m["something_new"] = {"x": 1}
    write(bundle_copy, m)
    b = Bundle.load(bundle_copy)
    assert b.manifest.get("something_new") == {"x": 1} and b.manifest["engines"][0]["trt"] == "10"


@pytest.mark.parametrize("where", ["graph", "artifact", "engine", "variant"])
@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "sub/../../outside.onnx", "C:\\x.onnx", ""])
def test_paths_outside_the_bundle_are_refused(bundle_copy, where, name):
    m = read(bundle_copy)
    if where == "graph":
        m["graphs"]["encoder"]["file"] = name
        m["artifacts"][name] = m["artifacts"]["encoder.onnx"]
    elif where == "artifact":
        m["artifacts"][name] = {"sha256": "0" * 64}
    elif where == "engine":
        m["engines"] = [{"graph": "encoder", "file": name}]
    else:
        m["variants"] = {"int8": {"graphs": {"decoder": name}}}
    write(bundle_copy, m)
    with pytest.raises(BundleError) as e:
        Bundle.load(bundle_copy, verify=False)
    assert "\n" not in str(e.value)
    one_error_line(describe_cli(bundle_copy, "x.png"))


def test_symlink_leaving_the_bundle_is_refused_even_with_the_right_hash(bundle_copy, tmp_path):
    """The manifest supplies the hash of the file it names, so a hash cannot protect: the path check does."""
    outside = tmp_path / "elsewhere.onnx"
    shutil.copyfile(bundle_copy / "encoder.onnx", outside)
    (bundle_copy / "encoder.onnx").unlink()
    (bundle_copy / "encoder.onnx").symlink_to(outside)
    assert sha256_path(bundle_copy / "encoder.onnx") == read(bundle_copy)["artifacts"]["encoder.onnx"]["sha256"]
    with pytest.raises(BundleError, match="outside the bundle"):
        Bundle.load(bundle_copy)
    one_error_line(describe_cli(bundle_copy, "x.png"), "outside the bundle")


def test_symlinked_bundle_directory_and_inner_symlinks_are_fine(bundle_copy, tmp_path):
    (bundle_copy / "graphs").mkdir()
    (bundle_copy / "decoder.onnx").rename(bundle_copy / "graphs" / "decoder.onnx")
    (bundle_copy / "decoder.onnx").symlink_to(Path("graphs") / "decoder.onnx")
    link = tmp_path / "link"
    link.symlink_to(bundle_copy)
    assert Bundle.load(link).path("decoder").is_file()


@pytest.mark.parametrize("manifest", [[1, 2, 3], {"format": "pvlm-bundle", "version": 1}, "null"])
def test_describe_on_wrong_shape_manifest(bundle_copy, manifest):
    write(bundle_copy, manifest)
    one_error_line(describe_cli(bundle_copy, "x.png"), str(bundle_copy), "manifest")


def test_unparseable_onnx_with_matching_hashes_is_named(bundle_copy, tmp_path):
    """Its sha256 and the content hash recomputed: the graph check at load names the file; unverified, ONNX
    Runtime does."""
    pytest.importorskip("onnxruntime")
    from PIL import Image

    from runtime import Describer

    (bundle_copy / "encoder.onnx").write_bytes(b"\x08\x07garbage" * 100)
    m = read(bundle_copy)
    m["artifacts"]["encoder.onnx"]["sha256"] = sha256_path(bundle_copy / "encoder.onnx")
    write(bundle_copy, Manifest.from_dict(m).sealed().to_dict())
    img = tmp_path / "a.png"
    Image.new("RGB", (32, 64)).save(img)
    err = one_error_line(describe_cli(bundle_copy, img, "--backend", "onnxruntime-cpu"), "encoder.onnx")
    assert "not a readable ONNX model" in err
    with pytest.raises(BundleError, match="encoder.onnx: ONNX Runtime cannot load"):
        Describer(Bundle.load(bundle_copy, verify=False), backend="onnxruntime-cpu")


def test_manifest_json_too_deep_is_a_bundle_error(bundle_copy):
    (bundle_copy / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match="corrupt manifest"):
        Bundle.load(bundle_copy)


def test_symlink_inside_a_package_artifact_is_refused(bundle_copy, tmp_path):
    """A folder artefact (an .mlpackage) is hashed file by file: none of them may point out of the bundle."""
    from export.manifest import artifact_entry

    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    pkg = bundle_copy / "model.mlpackage"
    (pkg / "Data").mkdir(parents=True)
    (pkg / "Data" / "weights.bin").symlink_to(secret)
    m = read(bundle_copy)
    m["artifacts"]["model.mlpackage"] = artifact_entry(bundle_copy, "model.mlpackage")
    write(bundle_copy, m)
    with pytest.raises(BundleError, match="outside the bundle"):
        Bundle.load(bundle_copy)
    (pkg / "Data" / "weights.bin").unlink()
    (pkg / "Data" / "weights.bin").write_text("outside")
    Bundle.load(bundle_copy)  # the same package with a real file is fine


def test_manifest_round_trips_and_is_rebuilt_not_mutated(tiny_bundle):
    """to_dict() is manifest.json as written; the with_* builders return a new, validated manifest."""
    m = Bundle.load(tiny_bundle).manifest
    assert m.to_dict() == read(tiny_bundle)
    assert json.dumps(m.to_dict(), indent=2) + "\n" == (tiny_bundle / "manifest.json").read_text()  # byte for byte
    m2 = m.with_source("elsewhere.pt", {"epoch": 3})
    assert m2.source_checkpoint == "elsewhere.pt" and m2.source_meta == {"epoch": 3}
    assert m.source_checkpoint != "elsewhere.pt" and list(m2.to_dict()) == list(m.to_dict())  # same key order
    with pytest.raises(BundleError, match="variants.fp16.graphs.encoder"):
        m.with_variant("fp16", {"graphs": {"encoder": "../x.onnx"}})


def test_typed_verification_reads_what_export_wrote(tiny_bundle):
    """One record per decoder graph; the JSON keeps the portable decoder flat and decoder_ort nested."""
    m = Bundle.load(tiny_bundle).manifest
    raw = read(tiny_bundle)["verification"]
    assert m.verification.to_dict() == raw
    p = m.parity
    assert set(p.decoders) == {"decoder", "decoder_ort"}
    assert p.decoder.sequences_identical == raw["parity"]["sequences_identical"] == p.images
    assert p.decoders["decoder_ort"].to_dict() == raw["parity"]["decoder_ort"]
    assert m.variant_reports == {}


def test_source_checkpoint_is_found_or_the_reason_given(bundle_copy, tiny_checkpoint, tmp_path):
    b = Bundle.load(bundle_copy)  # a copy elsewhere: found by the absolute hint
    assert b.find_source_checkpoint() == tiny_checkpoint.resolve()
    m = read(bundle_copy)
    shutil.copyfile(tiny_checkpoint, bundle_copy / "beside.pt")
    m["source"] = {**m["source"], "checkpoint": "beside.pt", "checkpoint_absolute": str(tmp_path / "gone.pt")}
    write(bundle_copy, m)
    assert Bundle.load(bundle_copy, verify=False).find_source_checkpoint() == (bundle_copy / "beside.pt").resolve()
    m["source"]["checkpoint"] = "gone.pt"
    write(bundle_copy, m)
    with pytest.raises(BundleError, match="source checkpoint is missing \\(looked at .*gone.pt"):
        Bundle.load(bundle_copy, verify=False).find_source_checkpoint()
    del m["source"]
    write(bundle_copy, m)
    with pytest.raises(BundleError, match="names no source checkpoint"):
        Bundle.load(bundle_copy, verify=False).find_source_checkpoint()


def test_record_engines_replaces_only_what_it_rebuilt(bundle_copy):
    from export.manifest import artifact_entry, record_engines
    from runtime.engines import Engine

    def engine(fmt: str, file: str, precision: str = "fp16") -> Engine:
        (bundle_copy / file).write_bytes(file.encode())
        a = artifact_entry(bundle_copy, file)
        return Engine(fmt, "encoder", file, precision, a["sha256"], a["bytes"])

    plan16, plan32 = engine("tensorrt-plan", "e16.plan"), engine("tensorrt-plan", "e32.plan", "fp32")
    record_engines(Bundle.load(bundle_copy), [plan16, plan32], lambda e: False)
    package = engine("coreml-mlpackage", "e.mlpackage")
    record_engines(Bundle.load(bundle_copy), [package], lambda e: e.format == "coreml-mlpackage")
    new16 = engine("tensorrt-plan", "n16.plan")
    record_engines(Bundle.load(bundle_copy), [new16], lambda e: e.format == "tensorrt-plan" and e.precision == "fp16")
    b = Bundle.load(bundle_copy)  # every recorded file verified against its sha256
    assert [e.file for e in b.engines] == ["e32.plan", "e.mlpackage", "n16.plan"]
    assert {"e16.plan", "n16.plan", "e.mlpackage"} <= set(b.manifest.artifacts)


def test_source_checkpoint_is_relative_to_the_bundle(tiny_checkpoint, tmp_path, monkeypatch):
    """Exported with relative paths from one folder, the bundle finds its checkpoint from any other folder."""
    from export import export_onnx

    work = tmp_path / "work"
    (work / "runs").mkdir(parents=True)
    shutil.copyfile(tiny_checkpoint, work / "runs" / "best.pt")
    monkeypatch.chdir(work)
    export_onnx(Path("runs/best.pt"), Path("runs/bundle"), verify=False, max_new_tokens=4)
    assert read(work / "runs" / "bundle")["source"]["checkpoint"] == "../best.pt"
    monkeypatch.chdir(tmp_path)
    assert Bundle.load(work / "runs" / "bundle").find_source_checkpoint() == (work / "runs" / "best.pt").resolve()
    moved = tmp_path / "moved"
    shutil.move(str(work / "runs"), moved)  # the checkpoint travels with the bundle
    assert Bundle.load(moved / "bundle").find_source_checkpoint() == (moved / "best.pt").resolve()
