"""``pvlm-eval MODEL DATA.jsonl``: caption metrics, attribute accuracy, backend parity, throughput."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from runtime.atomic import write_json

from runtime.backends import NAMES as RUNTIME_BACKENDS
from runtime.cli_common import (CONTEXT_SETTINGS, ChoiceList, Command, CommandFailure, MissingPackage, common_options,
                                fail_on_bad_input, first_line, missing_package_message, writing)
from runtime.decoding_cli import decoding_from_flags, decoding_options

from .confidence import confidence_lines


def _split(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v for item in values for v in item.replace(",", " ").split())


def _num(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else ("n/a" if value is None else str(value))


def _pct(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, float) else "n/a"


def confusion_lines(confusion: dict[str, dict[str, int]], width: int = 8) -> list[str]:
    """A confusion table (true -> predicted -> count) as aligned text rows; zero cells print as '.'."""
    truth = sorted(confusion)
    preds = sorted({p for row in confusion.values() for p in row} - set(truth))
    cols = truth + preds
    lines = [" " * (width + 2) + "".join(f"{c[:width - 1]:>{width}}" for c in cols)]
    for t in truth:
        cells = "".join(f"{confusion[t].get(c, 0) or '.':>{width}}" for c in cols)
        lines.append(f"  {t[:width]:<{width}}{cells}")
    return lines


def decoding_lines(decodings: dict[str, Any]) -> list[str]:
    """One row per decoding: CIDEr, BLEU-4, mean attribute accuracy, each attribute's accuracy, images/s."""
    first = next(iter(decodings.values()))
    keys = list(first["attribute_accuracy"])
    head = f"  {'decoding':<10} {'CIDEr':>6} {'BLEU-4':>6} {'attr':>6} " + " ".join(f"{k[:11]:>11}" for k in keys)
    lines = ["caption metrics and attribute accuracy per decoding (best sequence of each image)", head + "   img/s"]
    for label, d in decodings.items():
        m = d["caption_metrics"]
        cells = " ".join(f"{_pct(d['attribute_accuracy'].get(k)):>11}" for k in keys)
        lines.append(f"  {label:<10} {_num(m['CIDEr'], 3):>6} {_num(m['BLEU-4'], 3):>6} {_pct(d['attribute_mean']):>6} "
                     f"{cells}   {_num(d['throughput']['images_per_s'], 1)}")
    return lines


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The console summary: metrics, attribute accuracy, parity, throughput."""
    lines = [f"{report['n_images']} images ({report['skipped']} skipped), "
             f"descriptions from {report['scored_backend']} ({report.get('decoding', 'greedy')})", "",
             "caption metrics"]
    for name, value in report["caption_metrics"].items():
        lines.append(f"  {name:<9} {_num(value)}")
    attrs = report["attributes"]
    lines += ["", f"attribute accuracy (ground truth: {attrs['source']}) beside the majority-class rate "
                  "(always answering the commonest true value) and the model's commonest answer"]
    lines.append(f"  {'':<12} {'accuracy':>8}  {'majority':>8}  {'lift':>6}  commonest answer")
    for name, a in attrs["categories"].items():
        maj, acc = a.get("majority_rate"), a["accuracy"]
        lift = f"{(acc - maj) * 100:+.0f} pt" if isinstance(acc, float) and isinstance(maj, float) else "n/a"
        top = (f"{a['top_prediction']} {a['top_prediction_rate']:.0%}" if a.get("top_prediction") is not None
               else "n/a")
        lines.append(f"  {name:<12} {_pct(acc):>8}  {_pct(maj):>8}  {lift:>6}  {top}  "
                     f"(n={a['n']}, majority {a.get('majority')})")
    lines.append(f"  {'mean':<12} {_pct(attrs['mean']):>8}")
    for name, a in attrs["categories"].items():
        if a.get("confusion"):
            lines += ["", f"confusion {name} (rows: true, columns: predicted)"] + confusion_lines(a["confusion"])
    lines += ["", *confidence_lines(report["confidence"])] if "confidence" in report else []
    if len(report.get("decodings", {})) > 1:
        lines += ["", *decoding_lines(report["decodings"])]
    parity = report["parity"]
    lines.append("")
    if parity["available"]:
        for name, p in parity["backends"].items():
            lines.append(f"parity {name} vs PyTorch FP32: exact match {_num(p['exact_match_rate'], 3)}, "
                         f"token agreement {_num(p['token_agreement'], 4)} ({p['n']} images)")
    else:
        lines.append(f"parity: not measured ({parity['reason']})")
    for name, t in report["throughput"].items():
        lines.append(f"throughput {name}: {_num(t['images_per_s'], 1)} images/s "
                     f"({t['images']} images in {_num(t['seconds'], 2)} s, batch {t['batch_size']})")
    return lines


@click.command(cls=Command, context_settings=CONTEXT_SETTINGS)
@click.argument("model", type=click.Path())
@click.argument("data", type=click.Path())
@click.option("--image-root", type=click.Path(file_okay=False), help="Resolve relative image paths here.")
@click.option("--backend", "backends", multiple=True, default=("onnxruntime-cpu",), type=ChoiceList(RUNTIME_BACKENDS),
              help="Repeat or comma-separate; the first one's descriptions are scored.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N usable images.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), help="Default: the bundle's limit.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, help="Images per describe call.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Write a self-contained HTML report.")
@click.option("--max-images", type=click.IntRange(min=0), default=200,
              help="Image cards in the HTML report (mistakes first).")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON to stdout (instead of the summary).")
@click.option("--json-out", "json_path", type=click.Path(dir_okay=False), help="Write the full report as JSON.")
@click.option("--no-reference", is_flag=True, help="Skip the PyTorch FP32 parity check.")
@click.option("--no-meteor", is_flag=True, help="Skip METEOR (it starts a Java process).")
@click.option("--min-confidence", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Abstain below this calibrated probability (bundles with attribute heads); the report shows "
                   "precision and coverage at several thresholds either way.")
@decoding_options
@click.option("--decoding", "decodings", multiple=True,
              help="Also score these decodings of the first backend, side by side (repeat or comma-separate): "
                   "greedy, beamsN (e.g. beams3), sample, original (sampling at the original repository's "
                   "settings: temperature 0.7, top-k 50, top-p 0.9); with the flags' seed and guard.")
@common_options()
def main(model: str, data: str, image_root: str | None, backends: tuple[str, ...], limit: int | None,
         max_new_tokens: int | None, batch_size: int, html_path: str | None, max_images: int, as_json: bool, json_path: str | None,
         no_reference: bool, no_meteor: bool, min_confidence: float, decodings: tuple[str, ...], quiet: bool,
         **decoding: Any) -> None:
    """Evaluate MODEL (export bundle or .pt checkpoint) on DATA.jsonl (MSP60k-style rows).

    The decoding flags (--beams, --sample, ...) choose how every backend decodes (greedy by default; the
    PyTorch parity check needs greedy); --decoding adds more decodings to compare.
    """
    from runtime.backends import BackendUnavailable

    from .quality import EvalConfig, evaluate
    from .quality_html import write_html

    with fail_on_bad_input(KeyError):
        cfg = EvalConfig(model=model, data=data, image_root=image_root, backends=_split(backends), limit=limit,
                         max_new_tokens=max_new_tokens, batch_size=batch_size, reference=not no_reference,
                         progress=not quiet, meteor=not no_meteor, min_confidence=min_confidence,
                         decoding=decoding_from_flags(**decoding), decodings=_split(decodings))
        try:
            report = evaluate(cfg)
        except (BackendUnavailable, RuntimeError, ImportError) as e:
            if isinstance(e, ImportError) and missing_package_message(e.name or ""):
                raise MissingPackage(missing_package_message(e.name or "")) from None  # usage: exit 2
            raise CommandFailure(first_line(e)) from None
        # each output fails on its own line (a full disk: "error: writing report.html: No space left on device")
        with writing("stdout", sys.stdout):
            if as_json:
                click.echo(json.dumps(report, indent=2, ensure_ascii=False, default=str))
            else:
                for line in summary_lines(report):
                    click.echo(line)
        if html_path:
            with writing(html_path):
                write_html(report, html_path, max_images=max_images)
            click.echo(f"wrote {html_path}", err=as_json)
        if json_path:
            with writing(json_path):
                write_json(json_path, report, ensure_ascii=False)
            click.echo(f"wrote {json_path}", err=as_json)


__all__ = ["confusion_lines", "decoding_lines", "main", "summary_lines"]
