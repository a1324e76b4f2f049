"""``pvlm-data``: dataset tools (synthetic person crops with captions)."""

from __future__ import annotations

from pathlib import Path

import click

from runtime.cli_common import CONTEXT_SETTINGS, Group, common_options, fail_on_bad_input, parse_size, version_option

from .outdir import check_replaceable, is_synth_dataset, set_aside


@click.group(cls=Group, context_settings=CONTEXT_SETTINGS)
@version_option
def main() -> None:
    """Make datasets for pvlm-train."""


@main.command(context_settings=CONTEXT_SETTINGS)
@click.option("--out", required=True, type=click.Path(), help="Output folder (must not exist or be empty).")
@click.option("--n", default=2000, type=int, help="Number of images.")
@click.option("--seed", default=0, type=int, help="Random seed; image i depends only on (seed, i).")
@click.option("--size", default="256x128", help="Image size HxW.")
@click.option("--val-fraction", default=0.1, type=float, help="Held-out fraction (0: a single data.jsonl).")
@click.option("--workers", default=0, type=int, help="Worker processes (0 or 1: none).")
@click.option("--force", is_flag=True, help="Replace --out if it is a dataset written by pvlm-data (anything else is refused).")
@common_options()
def synth(out: str, n: int, seed: int, size: str, val_fraction: float, workers: int, force: bool, quiet: bool) -> None:
    """Render synthetic people with known attributes and MSP60k-style captions."""
    from .synth import SynthConfig, write_dataset

    height, width = parse_size(size, "--size")
    config = SynthConfig(n=n, seed=seed, size=(height, width), val_fraction=val_fraction)
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
