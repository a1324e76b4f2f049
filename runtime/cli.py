"""``pvlm-describe BUNDLE IMAGE...``: one description per image (plain lines or JSON lines)."""

from __future__ import annotations

import json
import logging
import sys

import click

from .preprocess import DEFAULT_MAX_PIXELS


class _UsageError(click.ClickException):
    exit_code = 2

    def show(self, file=None) -> None:  # noqa: ANN001 - click's signature
        click.echo(f"error: {self.format_message()}", err=True)


@click.command(context_settings={"show_default": True})
@click.argument("bundle", type=click.Path())
@click.argument("images", nargs=-1, required=True)
@click.option("--backend", default="auto", help="auto, onnxruntime-cpu, onnxruntime-cuda, ...")
@click.option("--json", "as_json", is_flag=True, help="JSON lines with tokens, attributes and timings.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), help="Default: the bundle's limit.")
@click.option("--max-batch", type=click.IntRange(min=1), help="Default: the bundle's limit.")
@click.option("--threads", type=click.IntRange(min=1), help="Intra-op threads.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32",
              help="Graph precision; fp16/int8 need a bundle exported with --fp16/--int8.")
@click.option("--bgr", is_flag=True, help="Arrays are BGR (irrelevant for image files).")
@click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS,
              help="Refuse images with more pixels (decompression-bomb guard).")
def main(bundle: str, images: tuple[str, ...], backend: str, as_json: bool, max_new_tokens: int | None,
         max_batch: int | None, threads: int | None, precision: str, bgr: bool, max_pixels: int) -> None:
    """Describe each IMAGE with the exported BUNDLE.

    \b
    Exit status: 0 every image described; 1 some images failed (each named in
    an "error:" line, the others printed); 2 bad usage, an unusable bundle, or
    no image could be described.
    """
    from .backends import BackendUnavailable
    from .bundle import BundleError
    from .describer import Describer

    logging.basicConfig(level=logging.ERROR, format="%(message)s")
    try:
        d = Describer(bundle, backend=backend, threads=threads, max_batch=max_batch,
                      max_new_tokens=max_new_tokens, channel_order="bgr" if bgr else "rgb", max_pixels=max_pixels,
                      precision=precision)
    except (BundleError, BackendUnavailable, ValueError) as e:
        raise _UsageError(str(e)) from None
    failed = 0
    for path, res in zip(images, d.describe(list(images))):
        if not res.ok:
            failed += 1
            click.echo(f"error: {res.error}", err=True)
            if not as_json:
                continue
        if as_json:
            click.echo(json.dumps({"image": path, "text": res.text, "tokens": res.tokens,
                                   "attributes": res.attributes, "timings": res.timings, "error": res.error}))
        else:
            click.echo(f"{path}\t{res.text}")
    if failed:
        sys.exit(2 if failed == len(images) else 1)
