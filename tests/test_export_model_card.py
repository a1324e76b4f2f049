"""export writes a model card (README.md) and description.schema.json into every bundle, listed with sha256."""

from __future__ import annotations

import json
import shutil

import pytest


def test_card_and_schema_listed_in_manifest(tiny_bundle):
    from runtime.bundle import sha256_path

    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    for name in ("README.md", "description.schema.json"):
        assert manifest["artifacts"][name]["sha256"] == sha256_path(tiny_bundle / name)


def test_card_says_what_it_is_and_what_it_is_not_for(tiny_bundle):
    from runtime.attribute_schema import ATTRIBUTE_KEYS

    card = (tiny_bundle / "README.md").read_text()
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    parity = manifest["verification"]["parity"]
    for heading in ("## Intended use", "## Out-of-scope use", "## Gender and age", "## Training data",
                    "## Evaluation summary", "## Export parity", "## Output and attribute vocabulary", "## Licence"):
        assert heading in card, heading
    assert "test_efficientnet" in card and "apparent" in card and "MIT" in card
    assert f"{parity['sequences_identical']}/{parity['images']} images" in card
    assert f"{parity['logits_max_abs_diff']:.2e}" in card
    assert all(f"`{k}`" in card for k in ATTRIBUTE_KEYS)


def test_schema_file_is_the_runtime_schema(tiny_bundle):
    from runtime.description_schema import description_schema

    jsonschema = pytest.importorskip("jsonschema", reason="the dev extra installs jsonschema")
    schema = json.loads((tiny_bundle / "description.schema.json").read_text())
    assert schema == description_schema()
    jsonschema.Draft202012Validator.check_schema(schema)


def test_edited_card_fails_verification(tiny_bundle, tmp_path):
    from runtime.bundle import Bundle, BundleError

    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    (b / "README.md").write_text("# something else\n")
    with pytest.raises(BundleError, match="README.md"):
        Bundle.load(b)
