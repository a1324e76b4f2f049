"""A small real-photograph check: people in photographs that installable packages ship, labelled by eye.

``bench/real_photos.jsonl`` holds, per person, the package and file of the photograph, the box (x0, y0,
x1, y1 in pixels), the photograph's licence, a caption written by eye and the attributes a person would
state from the crop (fields that cannot be seen are left out and not scored). The photographs are not
copied into this repository: ``python -m bench.real_photos --out DIR`` crops them out of the installed
packages (scikit-image, matplotlib, and the sample assets of ultralytics and insightface, which need no
import: ``pip install --no-deps ultralytics==8.4.190 insightface==2.1``) into a dataset ``pvlm-eval``
reads, and ``--report EVAL.json`` sets the model's per-field accuracy beside the fixed guess's.

The fixed guess is the commonest look of street footage, the same answer for every crop: an adult man in
a black jacket and black trousers, no hat, nothing carried, seen from the front, standing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from pvlm.installed_files import locate
from runtime.attribute_schema import FIELD
from runtime.cli_common import CONTEXT_SETTINGS, common_options, fail_on_bad_input

LABELS = Path(__file__).with_name("real_photos.jsonl")
FIXED_GUESS: dict[str, Any] = {"gender": "male", "age": "adult", "upper": "jacket", "upper_color": "black",
                               "lower": "trousers", "lower_color": "black", "headwear": None, "carrying": [],
                               "view": "front", "posture": "standing"}


def labels(path: Path = LABELS) -> list[dict[str, Any]]:
    """The labelled people, each value checked against the attribute schema."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for row in rows:
        for key, value in row["attributes"].items():
            allowed = set(FIELD[key].values) | {"none"}
            values = value if isinstance(value, list) else [value]
            bad = [v for v in values if v not in allowed]
            if bad:
                raise ValueError(f"{path}: {row['id']}: {key}={bad[0]!r} is not a value of the schema")
    return rows


def write_check(out: Path, rows: Sequence[Mapping[str, Any]] | None = None) -> tuple[Path, list[str]]:
    """Crop every labelled person whose package is installed into ``out/images``; write ``out/data.jsonl``.

    ``out`` must be absent or empty; it appears whole or not at all. Returns the JSONL path and the
    packages that were not installed (their people are left out).
    """
    from PIL import Image

    from runtime.atomic import atomic_dir

    rows = labels() if rows is None else rows
    missing: list[str] = []
    lines = []
    with atomic_dir(out) as tmp:
        (tmp / "images").mkdir()
        for row in rows:
            src = locate(row["package"], row["file"])
            if src is None:
                missing += [row["package"]] if row["package"] not in missing else []
                continue
            with Image.open(src) as im:
                crop = im.convert("RGB").crop(tuple(row["box"]))
            name = f"images/{row['id']}.png"
            crop.save(tmp / name)
            lines.append(json.dumps({"image": name, "answer": row["answer"], "attributes": row["attributes"],
                                     "source": f"{row['package']}:{row['file']}", "licence": row["licence"]}))
        (tmp / "data.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return out / "data.jsonl", missing


def fixed_guess_accuracy(rows: Sequence[Mapping[str, Any]], guess: Mapping[str, Any] = FIXED_GUESS) -> dict[str, Any]:
    """Per-field accuracy of one answer given to every crop, scored as ``pvlm-eval`` scores a model."""
    from .quality import ATTRIBUTE_CATEGORIES, OPTIONAL_CATEGORIES, attribute_accuracy, expected_attributes

    keys = list(ATTRIBUTE_CATEGORIES + OPTIONAL_CATEGORIES)
    truth = [expected_attributes(r["attributes"], r["answer"], keys) for r in rows]
    expected = [{k: v[0] for k, v in t.items()} for t in truth]
    sources = [{k: v[1] for k, v in t.items()} for t in truth]
    return attribute_accuracy([dict(guess)] * len(rows), expected, keys, sources)


def comparison(report: Mapping[str, Any], baseline: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of (field, n, model accuracy, fixed-guess accuracy) from a ``pvlm-eval --json-out`` report."""
    model = report["attributes"]["categories"]
    out = []
    for key, base in baseline["categories"].items():
        if not base["n"]:
            continue
        m = model.get(key, {})
        out.append({"field": key, "n": base["n"], "model": m.get("accuracy"), "fixed_guess": base["accuracy"]})
    return out


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    def pct(v: Any) -> str:
        return "n/a" if v is None else f"{v:.0%}"

    lines = ["| field | n | model | fixed guess |", "|---|---:|---:|---:|"]
    lines += [f"| {r['field']} | {r['n']} | {pct(r['model'])} | {pct(r['fixed_guess'])} |" for r in rows]
    scored = [r for r in rows if r["model"] is not None]
    if scored:
        mean = lambda k: sum(r[k] for r in scored) / len(scored)  # noqa: E731
        lines.append(f"| mean | | {pct(mean('model'))} | {pct(mean('fixed_guess'))} |")
    return "\n".join(lines)


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--out", type=click.Path(file_okay=False), help="Write the crops and data.jsonl here (for pvlm-eval).")
@click.option("--report", type=click.Path(dir_okay=False, exists=True),
              help="A pvlm-eval --json-out report of that data: print its accuracy beside the fixed guess's.")
@click.option("--force", is_flag=True, help="Replace --out if it is a dataset (anything else is refused).")
@common_options()
def main(out: str | None, report: str | None, force: bool, quiet: bool) -> None:
    """The real-photograph check: write its crops, or compare a model's report with the fixed guess."""
    with fail_on_bad_input():
        if not out and not report:
            raise click.UsageError("give --out DIR (write the check) or --report EVAL.json (compare)")
        rows = labels()
        if out:
            from pvlm.outdir import check_replaceable, is_synth_dataset, set_aside

            check_replaceable(Path(out), force, is_synth_dataset, "a dataset")
            with set_aside(Path(out)):  # the old one comes back if writing fails
                data, missing = write_check(Path(out), rows)
            click.echo(f"wrote {data} ({len(rows)} people labelled)")
            for package in missing:
                click.echo(f"warning: {package} is not installed; its people are left out "
                           f"(pip install --no-deps {package})", err=True)
        if report:
            evaluated = json.loads(Path(report).read_text(encoding="utf-8"))
            installed = [r for r in rows if locate(r["package"], r["file"]) is not None]
            click.echo(_table(comparison(evaluated, fixed_guess_accuracy(installed))))


if __name__ == "__main__":
    main()
