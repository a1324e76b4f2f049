"""The files that make a bundle explain itself: ``README.md`` (model card) and ``description.schema.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runtime.attribute_schema import ATTRIBUTE_KEYS
from runtime.bundle import Manifest
from runtime.description_schema import SCHEMA_FILE, SCHEMA_VERSION, description_schema

from .manifest import artifact_entry

CARD_FILE = "README.md"
LICENSE = "MIT (the PersonVLM toolkit's licence; trained weights carry the licence of their training data too)"


def write_bundle_docs(bundle: Path, manifest: Manifest) -> Manifest:
    """Write the model card and the describe-output schema into ``bundle``; returns ``manifest`` with both
    listed as artefacts (sha256). Call before the manifest is written."""
    bundle = Path(bundle)
    (bundle / SCHEMA_FILE).write_text(json.dumps(description_schema(), indent=2) + "\n", encoding="utf-8")
    (bundle / CARD_FILE).write_text(model_card(manifest), encoding="utf-8")
    return manifest.with_artifacts({name: artifact_entry(bundle, name) for name in (CARD_FILE, SCHEMA_FILE)})


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "not recorded"
    return format(value, spec) if spec and isinstance(value, (int, float)) else str(value)


_USE = [
    "## Intended use", "",
    "- Describing person crops from a detector/tracker on CCTV or similar fixed cameras, so that operators "
    "can search footage by appearance (\"red jacket, backpack\") instead of scrubbing video.",
    "- Re-identification *aids* and retrieval where a human reviews every result.", "",
    "## Out-of-scope use", "",
    "- Identifying who a person is. The model has no notion of identity and must not be used for face "
    "recognition or to single out individuals.",
    "- Any decision about a person (access, arrest, employment, credit, insurance, immigration) taken on its "
    "output without human review.",
    "- Inferring sensitive characteristics beyond what the text states (ethnicity, health, religion, "
    "sexual orientation): the model was not trained for them and its output must not be read as such.", "",
    "## Gender and age: what they mean here", "",
    "The text may call a person \"male\"/\"female\" (man, woman, boy, girl, ...) and give an age group "
    "(young, adult, ...). These are **apparent** attributes: a guess from clothing, hair and build in a "
    "low-resolution crop, learned from annotators' labels, not a person's gender identity or actual age. "
    "Expect them to be wrong more often than clothing colours, worse on small, blurred, occluded, "
    "back-view or night-time crops, on children, and on people whose appearance differs from the "
    "training data. Do not use them to filter people out of a search without a human looking at the "
    "crops; `null` in the parsed attributes means the text did not say, not a negative finding.", "",
]


def _what(manifest: Manifest) -> list[str]:
    m, pre = manifest.model_config, manifest.preprocessing
    graphs = ", ".join(f"`{g.file}`" for g in manifest.graphs.values())
    return [
        "# PersonVLM bundle: model card", "",
        "## What this is", "",
        f"A small image-to-text model that writes one English sentence about a cropped person (clothing and "
        f"colours, carried objects, posture, view, apparent gender and age group), exported for inference "
        f"without PyTorch. Backbone `{m.backbone}` ({m.visual_tokens} visual tokens), a "
        f"{m.n_layers}-layer transformer decoder (d_model {m.d_model}, {m.n_heads} heads), vocabulary of "
        f"{m.vocab_size} tokens. Input: one RGB crop resized ({pre.resize}) to "
        f"{pre.height}x{pre.width}; output: up to {manifest.limits.max_new_tokens} tokens, greedy. "
        f"Graphs: {graphs}.", "",
        "Run it with `pvlm-describe THIS_FOLDER image.jpg` or `runtime.Describer(\"THIS_FOLDER\")` "
        "(the PersonVLM toolkit's runtime: `pip install -e '.[cpu]'` in a clone of the toolkit).", "",
    ]


def _data(manifest: Manifest) -> list[str]:
    meta = manifest.source_meta
    return [
        "## Training data", "",
        f"- Checkpoint: `{Path(manifest.source_checkpoint or 'not recorded').name}`; data hash "
        f"`{_fmt(meta.get('data_hash'))}`; {_fmt(meta.get('train_size'))} training and "
        f"{_fmt(meta.get('val_size'))} validation images; epoch {_fmt(meta.get('epoch'))}, step "
        f"{_fmt(meta.get('step'))}.",
        "- The toolkit trains on MSP60k-style JSONL (image path + caption) and on `pvlm-data synth` renderings "
        "(synthetic people with known attributes). Synthetic data does not transfer to real cameras on its own: "
        "the quickstart recipe's synthetic-only model states 92% of attribute fields right on held-out renderings "
        "but 27% on the toolkit's real-photograph check, below a fixed guess of the commonest look (60%), with "
        "confident probabilities either way. Check the evaluation numbers on your footage before relying on the "
        "output (`python -m bench.real_photos`, then `pvlm-eval`; docs/real-photos.md).", "",
        "## Evaluation summary", "",
        f"- Validation loss at export: {_fmt(meta.get('val_loss'), '.3f')} (token cross-entropy on held-out captions).",
        "- Caption metrics and attribute accuracy: run `pvlm-eval THIS_FOLDER data.jsonl` on data like yours; "
        "they are not stored in the bundle.", "",
    ]


def _parity(manifest: Manifest) -> list[str]:
    parity, ver = manifest.parity, manifest.verification
    lines = ["## Export parity (measured at export, ONNX Runtime FP32 vs PyTorch FP32)", ""]
    if parity:
        dec = parity.decoder
        lines += [
            f"- Greedy sequences identical: {dec.sequences_identical}/{parity.images} "
            f"images (batches {list(parity.batch_sizes)}), token agreement {dec.token_agreement:.4f}.",
            f"- Encoder outputs: max abs diff {parity.encoder_max_abs_diff:.2e}; decoder step "
            f"logits: max abs diff {dec.logits_max_abs_diff:.2e} over {dec.steps_compared} steps.",
        ]
    else:
        lines.append("- Not measured (exported with verification off).")
    return lines + [f"- Checks: {_fmt(ver.checks if ver else None)}.", ""]


def _output(manifest: Manifest) -> list[str]:
    return [
        "## Output and attribute vocabulary", "",
        f"`pvlm-describe --json` writes one JSON object per image, described by `{SCHEMA_FILE}` in this folder "
        f"(schema version {SCHEMA_VERSION}). The sentence is parsed into these attributes "
        "(`runtime.parse_attributes`; `carrying` is a list, the others a string or null):", "",
        ", ".join(f"`{k}`" for k in ATTRIBUTE_KEYS), "",
        f"The decoder's own vocabulary ({manifest.model_config.vocab_size} tokens) is listed in `manifest.json` under "
        "`vocab`.", "",
        "## Licence", "",
        f"{LICENSE}.", "",
        "## Files", "",
        "Every file is listed with its sha256 in `manifest.json`, which the runtime checks on load.", "",
    ]


def model_card(manifest: Manifest) -> str:
    """Markdown model card from the manifest: what, intended and out-of-scope use, data, parity, vocabulary."""
    return "\n".join(_what(manifest) + _USE + _data(manifest) + _parity(manifest) + _output(manifest))


__all__ = ["CARD_FILE", "model_card", "write_bundle_docs"]
