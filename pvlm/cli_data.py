"""``pvlm-data``: dataset tools (synthetic person crops, importing datasets users have, checking a dataset)."""

from __future__ import annotations

from pathlib import Path

import click

from runtime.cli_common import CONTEXT_SETTINGS, Group, common_options, fail_on_bad_input, parse_size, version_option

from .outdir import check_replaceable, is_synth_dataset, set_aside

# pvlm.datasets.FORMATS and pvlm.synth.PRIORS, spelled out so that --help does not import them
IMPORT_FORMATS = ("msp60k", "pa100k", "peta", "rap2", "market1501")
SYNTH_PRIORS = ("street", "uniform")


@click.group(cls=Group, context_settings=CONTEXT_SETTINGS)
@version_option
def main() -> None:
    """Make, import and check datasets for pvlm-train."""


@main.command(context_settings=CONTEXT_SETTINGS)
@click.option("--out", required=True, type=click.Path(), help="Output folder (must not exist or be empty).")
@click.option("--n", default=2000, type=int, help="Number of images.")
@click.option("--seed", default=0, type=int, help="Random seed; image i depends only on (seed, i).")
@click.option("--size", default="256x128", help="Image size HxW.")
@click.option("--val-fraction", default=0.1, type=float, help="Held-out fraction (0: a single data.jsonl).")
@click.option("--workers", default=0, type=int, help="Worker processes (0 or 1: none).")
@click.option("--priors", type=click.Choice(SYNTH_PRIORS), default="uniform", show_default=True,
              help="uniform: every value equally often (same images per seed as before); street (experimental): "
                   "attribute frequencies of pedestrian footage, photographic backgrounds, camera effects.")
@click.option("--photo-backgrounds", type=click.FloatRange(0.0, 1.0), default=None,
              help="Share of crops on a photograph shipped by an installed package [default: 0.5 street, 0 uniform].")
@click.option("--force", is_flag=True, help="Replace --out if it is a dataset written by pvlm-data (anything else is refused).")
@common_options()
def synth(out: str, n: int, seed: int, size: str, val_fraction: float, workers: int, priors: str,
          photo_backgrounds: float | None, force: bool, quiet: bool) -> None:
    """Render synthetic people with known attributes and MSP60k-style captions."""
    from .synth import SynthConfig, write_dataset

    height, width = parse_size(size, "--size")
    config = SynthConfig(n=n, seed=seed, size=(height, width), val_fraction=val_fraction, priors=priors,
                         photo_backgrounds=photo_backgrounds)
    out_dir = Path(out)
    with fail_on_bad_input():
        if workers < 0:
            raise ValueError(f"--workers must be >= 0, got {workers}")
        config.validate()  # before --force sets anything aside
        check_replaceable(out_dir, force, is_synth_dataset, "a pvlm-data dataset")
        with set_aside(out_dir):  # the old dataset comes back if writing fails
            paths = write_dataset(out_dir, config, workers=workers, progress=not quiet)
    click.echo(f"wrote {n} images to {out_dir}")
    for name, path in paths.items():
        click.echo(f"{name}: {path}")


@main.command("import", context_settings=CONTEXT_SETTINGS)
@click.argument("dataset_format", metavar="FORMAT", type=click.Choice(IMPORT_FORMATS))
@click.argument("source", type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Output folder (must not exist or be empty).")
@click.option("--images", type=click.Path(file_okay=False), help="Folder holding the images, if not the dataset's usual one.")
@click.option("--annotation", type=click.Path(dir_okay=False), help="Label file, if not in its usual place under SOURCE.")
@click.option("--copy", is_flag=True, help="Copy the images into OUT/images (default: reference them by absolute path).")
@click.option("--val-fraction", default=0.1, type=float, show_default=True,
              help="Held-out share for datasets without a validation partition (by person where known).")
@click.option("--seed", default=0, type=int, help="Seed of that hold-out.")
@click.option("--partition", default=1, type=int, show_default=True, help="RAP v2: which of its partitions (1-5).")
@click.option("--force", is_flag=True, help="Replace --out if it is a folder written by pvlm-data import.")
@common_options()
def import_(dataset_format: str, source: str, out: str, images: str | None, annotation: str | None, copy: bool,
            val_fraction: float, seed: int, partition: int, force: bool, quiet: bool) -> None:
    """Import a dataset you have (msp60k, pa100k, peta, rap2, market1501) as pvlm-train JSONL.

    Labels are mapped onto the attribute schema (docs/datasets.md); label-only datasets get template
    captions ("caption_source": "template"). Writes train.jsonl, val.jsonl (test.jsonl where the
    dataset has a test partition) and import.json.
    """
    from .datasets import ImportOptions, import_dataset

    opts = ImportOptions(images=Path(images) if images else None, annotation=Path(annotation) if annotation else None,
                         val_fraction=val_fraction, seed=seed, partition=partition)
    with fail_on_bad_input():
        summary = import_dataset(dataset_format, source, out, opts, copy=copy, force=force, progress=not quiet)
    for split, n in summary["splits"].items():
        click.echo(f"{split}: {Path(out) / f'{split}.jsonl'} ({n} rows)")
    if summary["unmapped_labels"]:
        click.echo(f"labels not mapped: {', '.join(summary['unmapped_labels'])}")


@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("data_jsonl", type=click.Path(dir_okay=False))
@click.option("--val", "val_jsonl", type=click.Path(dir_okay=False), help="Validation JSONL (checked for leakage too).")
@click.option("--image-root", type=click.Path(file_okay=False), help="Folder that relative image paths resolve against.")
@click.option("--min-size", default="48x16", show_default=True, help="Smallest useful crop, HxW.")
@click.option("--workers", default=4, type=click.IntRange(min=1), show_default=True, help="Threads reading images.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
@common_options()
def doctor(data_jsonl: str, val_jsonl: str | None, image_root: str | None, min_size: str, workers: int, as_json: bool,
           quiet: bool) -> None:
    """Check a dataset before training: images, duplicates, train/val leakage, captions, vocabulary, labels.

    Exit 0 when nothing is wrong (warnings allowed), 1 when a check found errors, 2 on unusable input.
    """
    import json

    from .doctor import check_dataset, render_text

    size = parse_size(min_size, "--min-size")
    with fail_on_bad_input():
        report = check_dataset(data_jsonl, val_jsonl, image_root, size, workers, progress=not quiet and not as_json)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else render_text(report))
    if not report.ok:
        raise SystemExit(1)
