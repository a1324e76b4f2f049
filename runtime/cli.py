"""``pvlm-describe BUNDLE IMAGE...``: one description per image (plain lines or JSON lines), printed per batch."""

from __future__ import annotations

import glob
import itertools
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import click

from .attribute_schema import ATTRIBUTE_KEYS
from .backends import NAMES
from .cli_common import CONTEXT_SETTINGS, Command, CommandError, common_options, echo_error, writing
from .decoding_cli import alternatives_record, decoding_from_flags, decoding_options
from .preprocess import DEFAULT_MAX_PIXELS, quote_path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm"})


def expand_inputs(args: Iterable[str], stdin: Iterable[str | bytes] | None = None) -> Iterator[str]:
    """IMAGE arguments -> image paths, lazily: a folder gives its image files (recursively, sorted), a
    pattern that is not an existing path gives its glob matches (``**`` recurses), ``-`` gives the
    lines of ``stdin`` (default: the process's, read as bytes in the file system's encoding). A pattern
    with no match is passed on as is, to be reported as not found."""
    for a in args:
        if a == "-":
            source = getattr(sys.stdin, "buffer", sys.stdin) if stdin is None else stdin
            yield from (path for path in map(stdin_path, source or ()) if path)
        elif os.path.isdir(a):
            found = sorted(str(p) for p in Path(a).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                click.echo(f"warning: {a}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})", err=True)
            yield from found
        elif not os.path.exists(a) and glob.has_magic(a):
            yield from sorted(glob.glob(a, recursive=True)) or [a]
        else:
            yield a


def stdin_path(line: str | bytes) -> str:
    r"""One line of a path list -> the path: only the line ending (``\n`` or ``\r\n``) is removed, so
    leading and trailing spaces stay part of the name; bytes decode as the file system does."""
    text = os.fsdecode(line) if isinstance(line, bytes) else line
    return text.removesuffix("\n").removesuffix("\r")


def plain_line(path: str, text: str, attributes: dict[str, Any]) -> str:
    """A plain output line: path (quoted if it has a tab, newline or other control character), text, attributes."""
    return f"{quote_path(path)}\t{text}\t{attribute_summary(attributes)}"


def _batches(items: Iterator[str], size: int) -> Iterator[list[str]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def attribute_summary(attributes: dict[str, Any]) -> str:
    """``upper=jacket upper_color=red carrying=backpack,umbrella``: the stated attributes (the schema's keys only;
    the attribute heads' probabilities are in ``--json``)."""
    parts = []
    for k, v in ((k, attributes[k]) for k in ATTRIBUTE_KEYS if k in attributes):
        if isinstance(v, list):
            v = ",".join(map(str, v))
        if v not in (None, ""):
            parts.append(f"{k}={v}")
    return " ".join(parts)


@click.command(cls=Command, context_settings=CONTEXT_SETTINGS)
@click.argument("bundle", type=click.Path())
@click.argument("images", nargs=-1, required=True)
@click.option("--backend", type=click.Choice(NAMES), default="auto", help="Runtime backend.")
@click.option("--json", "as_json", is_flag=True,
              help="JSON lines to stdout (schema: the bundle's description.schema.json).")
@click.option("--tokens", "with_tokens", is_flag=True, help="Include generated token ids in --json lines.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), help="Default: the bundle's limit.")
@click.option("--batch-size", "max_batch", type=click.IntRange(min=1),
              help="Images per batch; results print as each batch finishes. Default: the bundle's max batch.")
@click.option("--threads", type=click.IntRange(min=1), help="Intra-op threads.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32",
              help="Graph precision; fp16/int8 need a bundle exported with --fp16/--int8.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS,
              help="Refuse images with more pixels (decompression-bomb guard).")
@click.option("--min-confidence", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Report an attribute as unknown when the attribute heads' calibrated probability of its value is "
                   "below this (bundles with attribute heads; docs/attributes.md).")
@decoding_options
@common_options()
def main(bundle: str, images: tuple[str, ...], backend: str, as_json: bool, with_tokens: bool,
         max_new_tokens: int | None, max_batch: int | None, threads: int | None, precision: str, max_pixels: int,
         min_confidence: float, quiet: bool, **decoding: Any) -> None:
    """Describe each IMAGE with the exported BUNDLE.

    IMAGE is a file, a folder (its image files, recursively), a glob pattern (quote it; ** recurses)
    or - (paths on stdin, one per line; only the line ending is removed). Plain output is one
    tab-separated line per image: path, text, parsed attributes. A path holding a tab, newline or
    other control character (or starting with ") is printed in double quotes with C-style escapes
    (\\t, \\n, \\\\, \\", \\xNN), as git prints such paths; --json escapes as JSON does.
    Unreadable images (and anything but a regular file: a FIFO, a device) are reported on stderr
    and skipped.

    \b
    Exit status: 0 every image described; 1 some images failed (each named in
    an "error:" line, the others printed); 2 bad usage, an unusable bundle, or
    no image could be described.
    """
    with _open(bundle, decoding, backend=backend, threads=threads, max_batch=max_batch, max_new_tokens=max_new_tokens,
               max_pixels=max_pixels, precision=precision, min_confidence=min_confidence) as d:
        done, failed = _describe_all(d, images, as_json, with_tokens, bundle, quiet)
    if done == 0:
        raise CommandError("no images to describe")
    if failed:
        sys.exit(2 if failed == done else 1)


def _open(bundle: str, decoding: dict[str, Any], **options: Any) -> Any:
    """The Describer for ``bundle`` and the decoding flags; an unusable bundle, backend or option is a
    CommandError (exit 2)."""
    from .backends import BackendUnavailable
    from .bundle import BundleError
    from .describer import Describer

    try:
        return Describer(bundle, decoding=decoding_from_flags(**decoding), **options)
    except (BundleError, BackendUnavailable, ValueError) as e:
        raise CommandError(str(e)) from None


def _describe_all(d: Any, images: tuple[str, ...], as_json: bool, with_tokens: bool, bundle: str,
                  quiet: bool) -> tuple[int, int]:
    """Describe every input in batches, printing each batch as it finishes; returns (inputs, failed)."""
    from tqdm import tqdm

    from .description_schema import bundle_id

    bid = bundle_id(bundle)
    paths: Iterator[str] | list[str] = expand_inputs(images)
    if "-" not in images:  # folders and globs list quickly: a known total for the bar; stdin streams
        paths = list(paths)
    bar = tqdm(total=len(paths) if isinstance(paths, list) else None, desc="describing", unit="img",
               file=sys.stderr, leave=False, disable=quiet or not sys.stderr.isatty())
    failed = done = 0
    for chunk in _batches(iter(paths), d.max_batch):
        # indices counted across batches, so "input N" in errors is the Nth image overall; each failure gets
        # its own "error:" line below
        results = d.describe(chunk, first_index=done, warn=False)
        bar.clear()
        failed += _print_batch(d, chunk, results, as_json, with_tokens, bid)
        done += len(chunk)
        bar.update(len(chunk))
    bar.close()
    return done, failed


def _print_batch(d: Any, chunk: list[str], results: list[Any], as_json: bool, with_tokens: bool, bid: str) -> int:
    """Print one batch's lines (errors on stderr); returns how many inputs failed."""
    from .description_schema import description_record

    failed, lines = 0, []
    for path, res in zip(chunk, results):
        if not res.ok:
            failed += 1
            echo_error(str(res.error))
        if as_json:
            record = description_record(path, res, bundle=bid, backend=d.backend_name, tokens=with_tokens)
            if d.decoding.mode != "greedy" or d.decoding.n_best > 1:
                record["alternatives"] = alternatives_record(res, with_tokens)
            lines.append(json.dumps(record))
        elif res.ok:
            lines.append(plain_line(path, res.text, res.attributes))
    with writing("stdout", sys.stdout):  # a full disk under `--json > file`: one line, not a traceback
        for line in lines:
            click.echo(line)
        sys.stdout.flush()
    return failed
