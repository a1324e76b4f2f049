"""Precision variants of a bundle's graphs (FP16, INT8), built beside the FP32 graphs and verified.

A variant replaces some of the FP32 graphs (``Variant.graphs``: graph name -> file); the
others keep running in FP32. Inputs and outputs stay those of the FP32 graph, so the
runtime's loop and the spec checks are the same for every precision. Each variant is
verified at export against PyTorch FP32 the way a user meets it: free-running greedy
decoding through the runtime's own backend in that precision (exact sequences, token
agreement, agreement of the parsed attributes, where each differing sequence first differs
and FP32's logit margin there), plus teacher-forced logits differences and a count of
non-finite values. A variant that misses its gate (``export/precisions.py``, the rule in
docs/precision.md) goes back to FP32 graph by graph; the export fails when no alternative
passes, unless the caller accepts the mismatch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pvlm.model import PersonVLM
from pvlm.reference import generate, trim
from runtime.attributes import parse_attributes
from runtime.bundle import Manifest
from runtime.describer import Describer, detokenize
from runtime.verification import Divergence, VariantReport

from .fp16 import build_fp16
from .int8 import build_int8
from .manifest import artifact_entry, write_manifest
from .precisions import PRECISIONS, SPECS, VERIFY_SEED, Variant, VariantOptions, precision_spec
from .spec import GraphSpec, cross_form_of, graph_specs
from .validate import ValidationError, check_graph, check_parity, parity_images

__all__ = ["PRECISIONS", "Variant", "VariantOptions", "add_variants", "build_variant", "gate_failures", "summary",
           "verify_variant"]

log = logging.getLogger(__name__)

Builder = Callable[[PersonVLM, Path, dict[str, GraphSpec], VariantOptions], Variant]
BUILDERS: dict[str, Builder] = {"fp16": build_fp16, "int8": build_int8}


def build_variant(precision: str, model: PersonVLM, out: Path, specs: dict[str, GraphSpec],
                  options: VariantOptions) -> Variant:
    """Write ``precision``'s graphs next to the FP32 ones in ``out``."""
    return BUILDERS[precision_spec(precision).name](model, out, specs, options)


def verify_variant(model: PersonVLM, bundle_dir: Path, precision: str, max_new_tokens: int,
                   n_images: int | None = None, batch: int = 16) -> VariantReport:
    """Measure a variant already listed in ``bundle_dir``'s manifest against PyTorch FP32.

    Free-running: the runtime's greedy loop in ``precision`` against :func:`pvlm.generate`.
    Teacher-forced: the variant's graphs fed the reference's tokens (logits max diff, non-finite count).
    """
    n = n_images or SPECS[precision].verify_images
    pixels = parity_images(model, n, seed=VERIFY_SEED)
    describer = Describer(bundle_dir, backend="onnxruntime-cpu", precision=precision, verify=False,
                          max_new_tokens=max_new_tokens)
    itos = describer.bundle.tokens
    batch = min(batch, describer.max_batch)
    eos = model.cfg.eos_id
    exact = agree = total = attr_same = attr_total = 0
    divergences: list[Divergence] = []
    with describer:  # closed before the teacher-forced check loads the variant's graphs again
        runs = [(start, *describer.generate_ids(pixels[start:start + batch], max_new_tokens))
                for start in range(0, n, batch)]
    for start, ours, _ in runs:
        chunk = pixels[start:start + batch]
        with torch.no_grad():
            ref = generate(model, torch.from_numpy(chunk), max_new_tokens)
        for row, (got, want_row) in enumerate(zip(ours, ref)):
            want = trim(want_row, eos)
            exact += got == want
            if got != want:
                divergences.append(first_divergence(model, chunk[row], want, got, start + row))
            agree += sum(a == b for a, b in zip(got, want))
            total += max(len(got), len(want), 1)
            a, b = parse_attributes(detokenize(got, itos)), parse_attributes(detokenize(want, itos))
            # A field counts where either side states it: None and an empty ``carrying`` list state nothing
            # (counting them made every description agree on at least one field).
            keys = [k for k in set(a) | set(b) if a.get(k) not in (None, []) or b.get(k) not in (None, [])]
            attr_same += sum(a.get(k) == b.get(k) for k in keys)
            attr_total += len(keys)
    return VariantReport(
        images=n, seed=VERIFY_SEED, max_new_tokens=max_new_tokens, sequences_identical=exact,
        token_agreement=agree / max(1, total),
        attribute_agreement=attr_same / attr_total if attr_total else 1.0, attribute_fields=attr_total,
        divergences=tuple(divergences), graphs=tuple(sorted(describer.bundle.variant_graphs(precision))),
        **_teacher_forced(model, describer, precision, max_new_tokens))


def first_divergence(model: PersonVLM, pixels: np.ndarray, want: list[int], got: list[int],
                     image: int) -> Divergence:
    """Where ``got`` first leaves FP32's ``want`` (ids without BOS/EOS) and FP32's logits at that step.

    Measured on the trained lite0 model: FP16's differing sequences diverged at top-2 gaps of
    0.0003-0.012, where caption templates are about equally likely (near-ties); a margin above
    the variant's logits error is not explained by rounding (a fault).
    """
    step = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    eos = model.cfg.eos_id
    ids = torch.tensor([[model.cfg.bos_id, *want[:step]]])
    with torch.no_grad():
        logits = model(torch.from_numpy(pixels[None]), ids)[0, -1]
    top = logits.topk(2).values
    ours, theirs = (want[step] if step < len(want) else eos), (got[step] if step < len(got) else eos)
    return Divergence(image=image, step=step, gap=float(top[0] - top[1]), margin=float(logits[ours] - logits[theirs]))


def _teacher_forced(model: PersonVLM, describer: Describer, precision: str, max_new_tokens: int) -> dict[str, Any]:
    """Logits and encoder differences of the variant's graphs on the reference's tokens (FP32 parity's images),
    as :class:`VariantReport` fields."""
    bundle = describer.bundle
    variant = bundle.variant_graphs(precision)
    ort_paths = None
    if "decoder_ort" in variant or "cross_ort" in variant:  # either replaced: check the pair as the runtime runs it
        ort_paths = (bundle.path("cross_ort", precision), bundle.path("decoder_ort", precision))
    rep, _ = check_parity(model, bundle.path("encoder", precision), bundle.path("decoder", precision),
                          max_new_tokens, ort_paths=ort_paths)
    # the worst decoder graph measured: an INT8 decoder_ort beside the FP32 portable decoder must show its own error
    graphs = rep.decoders.values()
    return {"encoder_max_abs_diff": rep.encoder_max_abs_diff,
            "logits_max_abs_diff": max(g.logits_max_abs_diff for g in graphs),
            "logits_max_abs": rep.logits_max_abs, "nonfinite": rep.nonfinite,
            "teacher_forced_sequences_identical": min(g.sequences_identical for g in graphs),
            "teacher_forced_images": rep.images, "decoder_ort": rep.decoders.get("decoder_ort")}


def gate_failures(precision: str, report: VariantReport) -> list[str]:
    """``precision``'s gate applied to ``report``, as failure lines (empty when the variant passes).

    Fails on parsed-attribute agreement below the floor, on more than the allowed share of
    confident divergences (a sequence that first differs where FP32's logit margin exceeds the
    variant's teacher-forced logits error), and on any non-finite value.
    """
    gate = precision_spec(precision).gate
    exact = f"{report.sequences_identical}/{report.images} sequences identical to PyTorch FP32"
    failures = []
    if report.attribute_agreement < gate.attribute_agreement:
        failures.append(f"{precision}: attribute agreement {report.attribute_agreement:.4f} is below "
                        f"{gate.attribute_agreement:g} ({report.attribute_fields} parsed fields; {exact})")
    confident = report.confident_divergences
    if report.confident_divergence_rate > gate.confident_divergence_rate:
        margins = ", ".join(f"{d.margin:.4f}" for d in sorted(confident, key=lambda d: -d.margin)[:5])
        failures.append(f"{precision}: {len(confident)}/{report.images} sequences "
                        f"({report.confident_divergence_rate:.1%}, at most {gate.confident_divergence_rate:.1%} "
                        f"allowed) first differ from PyTorch FP32 where its logit margin ({margins}) exceeds "
                        f"the variant's logits error {report.logits_max_abs_diff:.2e}: not near-ties ({exact})")
    if report.nonfinite:
        failures.append(f"{precision}: {report.nonfinite} non-finite values (overflow) in encoder outputs or logits")
    return failures


def summary(precision: str, report: VariantReport | Mapping[str, Any]) -> str:
    """One line for the CLI (``report``: the record or its manifest form)."""
    if not isinstance(report, VariantReport):
        report = VariantReport.from_dict(report)
    differ = report.images - report.sequences_identical
    return (f"{precision}: greedy sequences identical to PyTorch FP32 {report.sequences_identical}/{report.images} "
            f"({differ - len(report.confident_divergences)} differ at near-ties, "
            f"{len(report.confident_divergences)} confidently), "
            f"token agreement {report.token_agreement:.4f}, attributes {report.attribute_agreement:.4f}, "
            f"logits max abs diff {report.logits_max_abs_diff:.2e}, non-finite {report.nonfinite}"
            + (f"; {precision} graphs: {', '.join(report.graphs)}" if report.graphs else "")
            + (f" ({', '.join(report.fallback_fp32)} back to FP32: the first try missed its gate)"
               if report.fallback_fp32 else ""))


def add_variants(model: PersonVLM, out: Path, manifest: Manifest, precisions: tuple[str, ...],
                 options: VariantOptions | None = None, accept_mismatch: bool = False) -> Manifest:
    """Build, check and verify each precision variant in ``out``; returns ``manifest`` recording them (written
    as it goes).

    Raises :class:`ValidationError` when a variant's graph fails the structural checks, or
    misses its gate and ``accept_mismatch`` is false.
    """
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
        report = replace(report, accepted_mismatch=bool(failures) and accept_mismatch, failures=tuple(failures))
        manifest = manifest.with_variant(precision, {**variant.to_dict(), "verification": report.to_dict()})
        if failures and not accept_mismatch:
            raise ValidationError(failures, report.to_dict())
        for f in failures:
            log.warning("%s (accepted with --accept-mismatch)", f)
        write_manifest(out, manifest)
    return manifest


def _record_and_verify(model: PersonVLM, out: Path, manifest: Manifest,
                       variant: Variant) -> tuple[Manifest, VariantReport, list[str]]:
    """List ``variant`` in the manifest (written: verification runs it through the runtime), verify it, gate it."""
    manifest = manifest.with_artifacts({file: artifact_entry(out, file) for file in variant.graphs.values()})
    manifest = manifest.with_variant(variant.precision, variant.to_dict())
    write_manifest(out, manifest)
    report = verify_variant(model, out, variant.precision, manifest.limits.max_new_tokens)
    return manifest, report, gate_failures(variant.precision, report)


def _fall_back(model: PersonVLM, out: Path, manifest: Manifest, full: Variant, report: VariantReport,
               failures: list[str]) -> tuple[Manifest, Variant, VariantReport, list[str]]:
    """Try the precision's fallbacks in order on a variant that missed its gate; the first that passes is
    kept (with the why).

    Returns the manifest listing the variant kept (the full one, still failing, when none passes),
    that variant, its report and failures (then every try's). Files of graphs that went back to
    FP32 are deleted and their artifact entries dropped.
    """
    first = summary(full.precision, report)
    kept, kept_report, kept_failures = full, report, failures
    last = failures[0]
    for fp32 in SPECS[full.precision].fallbacks:
        back = [g for g in fp32 if g in full.graphs]
        graphs = {g: f for g, f in full.graphs.items() if g not in back}
        if not back or not graphs:
            continue
        log.warning("%s; verifying again with %s in FP32", last, ", ".join(back))
        plan = {**full.plan, "fallback": {"fp32": back, "reason": failures[0], "first_try": first}}
        candidate = Variant(full.precision, graphs, plan)
        manifest, rep, fails = _record_and_verify(model, out, manifest, candidate)
        rep = replace(rep, fallback_fp32=tuple(back))
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
