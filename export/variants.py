"""Precision variants of a bundle's graphs (FP16, INT8), built beside the FP32 graphs and verified.

A variant replaces some of the FP32 graphs (``Variant.graphs``: graph name -> file); the
others keep running in FP32. Inputs and outputs stay those of the FP32 graph, so the
runtime's loop and the spec checks are the same for every precision. Each variant is
verified at export against PyTorch FP32 the way a user meets it: free-running greedy
decoding through the runtime's own backend in that precision (exact sequences, token
agreement, agreement of the parsed attributes), plus teacher-forced logits differences and
a count of non-finite values. Below its floor (``GATES``) the export fails unless the
caller accepts the mismatch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pvlm.model import PersonVLM
from pvlm.reference import generate, trim
from runtime.attributes import parse_attributes
from runtime.bundle import Manifest
from runtime.describer import Describer, detokenize

from .spec import GraphSpec
from .validate import check_parity, parity_images

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "int8")
# The export fails below these floors unless --accept-mismatch: (report key, floor).
GATES: dict[str, tuple[str, float]] = {"fp16": ("sequence_match_rate", 0.99), "int8": ("attribute_agreement", 0.98)}
# When a variant misses its floor, these graphs go back to FP32 and the rest is verified again, one
# alternative after the other (only without --accept-mismatch, which keeps the first try). Measured
# (docs/notes/issue-14.md, issue-18.md): the FP16 decoder moves greedy near-ties of the trained small
# model (59/64 exact; its FP16 encoder with the FP32 decoder 64/64); the INT8 encoder costs attribute
# agreement (small preset 0.904), the INT8 decoder_ort alone keeps it (0.991).
FALLBACKS: dict[str, tuple[tuple[str, ...], ...]] = {
    "fp16": (("decoder", "cross_ort", "decoder_ort"), ("encoder",)),
    "int8": (("encoder",),),
}
# Images each variant is verified on (3/4 synthetic crops, 1/4 noise; another seed than the FP32 parity run).
VERIFY_IMAGES: dict[str, int] = {"fp16": 64, "int8": 200}
VERIFY_SEED = 1


@dataclass(frozen=True)
class VariantOptions:
    """Knobs for building variants: INT8 calibration data (JSONL of images; default synthetic crops)."""

    calibration: Path | None = None
    calibration_images: int = 64


@dataclass(frozen=True)
class Variant:
    """The graphs a precision variant replaces (name -> file in the bundle) and how they were made."""

    precision: str
    graphs: dict[str, str]
    plan: dict[str, Any] = field(default_factory=dict)  # which nodes stay FP32 / were quantized, tool versions

    def to_dict(self) -> dict[str, Any]:
        """Manifest form (the ``variants.<precision>`` entry; :func:`verify_variant` adds its report)."""
        return {"graphs": dict(self.graphs), "plan": self.plan}


def build_variant(precision: str, model: PersonVLM, out: Path, specs: dict[str, GraphSpec],
                  options: VariantOptions) -> Variant:
    """Write ``precision``'s graphs next to the FP32 ones in ``out``."""
    if precision == "fp16":
        from .fp16 import build_fp16 as build
    elif precision == "int8":
        from .int8 import build_int8 as build
    else:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    return build(model, out, specs, options)


def verify_variant(model: PersonVLM, bundle_dir: Path, precision: str, max_new_tokens: int,
                   n_images: int | None = None, batch: int = 16) -> dict[str, Any]:
    """Measure a variant already listed in ``bundle_dir``'s manifest against PyTorch FP32.

    Free-running: the runtime's greedy loop in ``precision`` against :func:`pvlm.generate`.
    Teacher-forced: the variant's graphs fed the reference's tokens (logits max diff, non-finite count).
    """
    n = n_images or VERIFY_IMAGES[precision]
    pixels = parity_images(model, n, seed=VERIFY_SEED)
    describer = Describer(bundle_dir, backend="onnxruntime-cpu", precision=precision, verify=False,
                          max_new_tokens=max_new_tokens)
    itos = describer.bundle.tokens
    batch = min(batch, describer.max_batch)
    eos = model.cfg.eos_id
    exact = agree = total = attr_same = attr_total = 0
    gaps: list[float] = []  # FP32's top-1 minus top-2 logit where each differing sequence first differs
    for start in range(0, n, batch):
        chunk = pixels[start:start + batch]
        ours, _ = describer.generate_ids(chunk, max_new_tokens)
        with torch.no_grad():
            ref = generate(model, torch.from_numpy(chunk), max_new_tokens)
        for row, (got, want_row) in enumerate(zip(ours, ref)):
            want = trim(want_row, eos)
            exact += got == want
            if got != want:
                gaps.append(_tie_gap(model, chunk[row], want, got))
            agree += sum(a == b for a, b in zip(got, want))
            total += max(len(got), len(want), 1)
            a, b = parse_attributes(detokenize(got, itos)), parse_attributes(detokenize(want, itos))
            # A field counts where either side states it: None and an empty ``carrying`` list state nothing
            # (counting them made every description agree on at least one field).
            keys = [k for k in set(a) | set(b) if a.get(k) not in (None, []) or b.get(k) not in (None, [])]
            attr_same += sum(a.get(k) == b.get(k) for k in keys)
            attr_total += len(keys)
    tf = _teacher_forced(model, describer, precision, max_new_tokens)
    report = {
        "images": n, "seed": VERIFY_SEED, "max_new_tokens": max_new_tokens,
        "sequences_identical": exact, "sequence_match_rate": exact / n,
        "token_agreement": agree / max(1, total),
        "attribute_agreement": attr_same / max(1, attr_total) if attr_total else 1.0,
        "attribute_fields": attr_total,
        "divergence_logit_gaps": [round(g, 5) for g in sorted(gaps)],
        **tf,
    }
    return report


def _tie_gap(model: PersonVLM, pixels: Any, want: list[int], got: list[int]) -> float:
    """FP32's top-1 minus top-2 logit at the first step where ``got`` leaves ``want``.

    A gap far below the variant's logits error is a near-tie (measured on the trained lite0
    model: FP16's three differing sequences diverged at gaps of 0.0003-0.012, where caption
    templates are about equally likely); a large gap would mean a real numerical fault.
    """
    step = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    ids = torch.tensor([[model.cfg.bos_id, *want[:step]]])
    with torch.no_grad():
        logits = model(torch.from_numpy(pixels[None]), ids)[0, -1]
    top = logits.topk(2).values
    return float(top[0] - top[1])


def _teacher_forced(model: PersonVLM, describer: Describer, precision: str, max_new_tokens: int) -> dict[str, Any]:
    """Logits and encoder differences of the variant's graphs on the reference's tokens (FP32 parity's images)."""
    bundle = describer.bundle
    variant = bundle.variant_graphs(precision)
    ort_paths = None
    if "decoder_ort" in variant or "cross_ort" in variant:  # either replaced: check the pair as the runtime runs it
        ort_paths = (bundle.path("cross_ort", precision), bundle.path("decoder_ort", precision))
    rep, _ = check_parity(model, bundle.path("encoder", precision), bundle.path("decoder", precision),
                          max_new_tokens, ort_paths=ort_paths)
    # the worst decoder graph measured: an INT8 decoder_ort beside the FP32 portable decoder must show its own error
    graphs = rep.decoders.values()
    out = {"encoder_max_abs_diff": rep.encoder_max_abs_diff,
           "logits_max_abs_diff": max(g.logits_max_abs_diff for g in graphs),
           "logits_max_abs": rep.logits_max_abs, "nonfinite": rep.nonfinite,
           "teacher_forced_sequences_identical": min(g.sequences_identical for g in graphs),
           "teacher_forced_images": rep.images}
    if "decoder_ort" in rep.decoders:
        out["decoder_ort"] = rep.decoders["decoder_ort"].to_dict()
    return out


def gate_failures(precision: str, report: dict[str, Any]) -> list[str]:
    """The floor a variant's report must reach, as failure lines (empty when it passes)."""
    key, floor = GATES[precision]
    failures = []
    if report[key] < floor:
        gaps = report.get("divergence_logit_gaps") or []
        ties = f"; FP32's top-2 logit gap where they first differ: {', '.join(f'{g:.4f}' for g in gaps[:5])}" if gaps else ""
        failures.append(f"{precision}: {key.replace('_', ' ')} {report[key]:.4f} is below {floor:g} "
                        f"({report['sequences_identical']}/{report['images']} sequences identical to PyTorch FP32{ties})")
    if report.get("nonfinite"):
        failures.append(f"{precision}: {report['nonfinite']} non-finite values (overflow) in encoder outputs or logits")
    return failures


def summary(precision: str, report: dict[str, Any]) -> str:
    """One line for the CLI."""
    return (f"{precision}: greedy sequences identical to PyTorch FP32 {report['sequences_identical']}/{report['images']}, "
            f"token agreement {report['token_agreement']:.4f}, attributes {report['attribute_agreement']:.4f}, "
            f"logits max abs diff {report['logits_max_abs_diff']:.2e}, non-finite {report['nonfinite']}"
            + (f"; {precision} graphs: {', '.join(report['graphs'])}" if "graphs" in report else "")
            + (f" ({', '.join(report['fallback_fp32'])} back to FP32: the first try missed the floor)"
               if report.get("fallback_fp32") else ""))


def add_variants(model: PersonVLM, out: Path, manifest: Manifest, precisions: tuple[str, ...],
                 options: VariantOptions | None = None, accept_mismatch: bool = False) -> Manifest:
    """Build, check and verify each precision variant in ``out``; returns ``manifest`` recording them (written
    as it goes).

    Raises :class:`ValidationError` when a variant's graph fails the structural checks, or
    falls below its floor and ``accept_mismatch`` is false.
    """
    from .manifest import write_manifest
    from .spec import cross_form_of, graph_specs
    from .validate import ValidationError, check_graph

    options = options or VariantOptions()
    step = manifest.graphs.get("decoder_ort")
    all_specs = graph_specs(model.cfg, cross_form_of(step and step.inputs))  # the form the bundle was written in
    specs = {name: spec for name, spec in all_specs.items() if name in manifest.graphs}
    for precision in precisions:
        variant = build_variant(precision, model, out, specs, options)
        failures = [f for name, file in variant.graphs.items() for f in check_graph(out / file, specs[name])]
        if failures:
            raise ValidationError(failures, {"precision": precision})
        manifest, report, failures = _record_and_verify(model, out, manifest, variant)
        if failures and not accept_mismatch:
            manifest, variant, report, failures = _fall_back(model, out, manifest, variant, report, failures)
        report["accepted_mismatch"] = bool(failures) and accept_mismatch
        manifest = manifest.with_variant(precision, {**variant.to_dict(), "verification": report})
        if failures and not accept_mismatch:
            raise ValidationError(failures, report)
        for f in failures:
            log.warning("%s (accepted with --accept-mismatch)", f)
        write_manifest(out, manifest)
    return manifest


def _record_and_verify(model: PersonVLM, out: Path, manifest: Manifest,
                       variant: Variant) -> tuple[Manifest, dict[str, Any], list[str]]:
    """List ``variant`` in the manifest (written: verification runs it through the runtime), verify it, gate it."""
    from .manifest import artifact_entry, write_manifest

    manifest = manifest.with_artifacts({file: artifact_entry(out, file) for file in variant.graphs.values()})
    manifest = manifest.with_variant(variant.precision, variant.to_dict())
    write_manifest(out, manifest)
    report = verify_variant(model, out, variant.precision, manifest.limits.max_new_tokens)
    report["graphs"] = sorted(variant.graphs)
    return manifest, report, gate_failures(variant.precision, report)


def _fall_back(model: PersonVLM, out: Path, manifest: Manifest, full: Variant, report: dict[str, Any],
               failures: list[str]) -> tuple[Manifest, Variant, dict[str, Any], list[str]]:
    """Try ``FALLBACKS`` in order on a variant below its floor; the first that passes is kept (with the why).

    Returns the manifest listing the variant kept (the full one, still failing, when none passes),
    that variant, its report and failures (then every try's). Files of graphs that went back to
    FP32 are deleted and their artifact entries dropped.
    """
    first = summary(full.precision, report)
    kept, kept_report, kept_failures = full, report, failures
    last = failures[0]
    for fp32 in FALLBACKS[full.precision]:
        back = [g for g in fp32 if g in full.graphs]
        graphs = {g: f for g, f in full.graphs.items() if g not in back}
        if not back or not graphs:
            continue
        log.warning("%s; verifying again with %s in FP32", last, ", ".join(back))
        plan = {**full.plan, "fallback": {"fp32": back, "reason": failures[0], "first_try": first}}
        candidate = Variant(full.precision, graphs, plan)
        manifest, rep, fails = _record_and_verify(model, out, manifest, candidate)
        rep["fallback_fp32"] = back
        if not fails:
            kept, kept_report, kept_failures = candidate, rep, fails
            break
        last = fails[0]
        kept_failures = [*kept_failures, *(f"{f} (with {', '.join(back)} in FP32)" for f in fails)]
    gone = [file for g, file in full.graphs.items() if g not in kept.graphs]
    manifest = manifest.with_variant(full.precision, kept.to_dict()).without_artifacts(gone)
    for file in gone:
        (out / file).unlink(missing_ok=True)
    return manifest, kept, kept_report, kept_failures
