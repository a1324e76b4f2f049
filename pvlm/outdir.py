"""Output directories: the one rule for what ``--force`` may replace, atomic swaps, cleanup after a failed run.

The rule (every command with ``--force``): an output directory that exists is written only when it is
empty, or when ``--force`` is given AND it is recognisably one of ours (an export bundle, a Triton
repository, a synthetic dataset, a quickstart folder). Anything else (a file, a symlink, a folder
holding anything else) is refused before any work starts and left untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from runtime import atomic
from runtime.bundle import is_bundle  # a ``pvlm-export onnx`` bundle: the format tag is the reader's

IsOurs = Callable[[Path], bool]


class OutputError(ValueError):
    """An output path that cannot be written or must not be replaced; the message names the user's path."""


class OutputExistsError(OutputError, FileExistsError):
    """The output exists and may not be replaced (a FileExistsError too, as before this rule)."""


def is_triton_repo(d: Path) -> bool:
    """A ``pvlm-export triton`` repository: only our model folders, each with a ``config.pbtxt``."""
    entries = list(d.iterdir())
    return bool(entries) and all(
        p.name in ("pvlm_encoder", "pvlm_decoder", "pvlm_describer") and not p.is_symlink()
        and (p / "config.pbtxt").is_file() for p in entries)


def is_synth_dataset(d: Path) -> bool:
    """A ``pvlm-data synth`` dataset: JSONL split files and ``images/`` holding PNGs only."""
    entries = list(d.iterdir())
    if not any(p.name.endswith(".jsonl") for p in entries):
        return False
    for p in entries:
        if p.name == "images" and p.is_dir() and not p.is_symlink():
            if not all(f.suffix == ".png" and f.is_file() for f in p.iterdir()):
                return False
        elif p.name not in ("train.jsonl", "val.jsonl", "data.jsonl") or not p.is_file():
            return False
    return True


def is_train_dir(d: Path) -> bool:
    """A ``pvlm-train`` output folder: checkpoints and JSON (history) files only."""
    entries = list(d.iterdir())
    return bool(entries) and all(p.is_file() and p.suffix in (".pt", ".json") for p in entries)


_QUICKSTART = {"data": is_synth_dataset, "test": is_synth_dataset, "test-train-size": is_synth_dataset,
               "train": is_train_dir, "bundle": is_bundle}
_QUICKSTART_FILES = ("eval.json", "eval.html", "eval-train-size.json", "bench.json", "bench.md")


def is_quickstart_dir(d: Path) -> bool:
    """A ``pvlm-quickstart`` folder: its datasets, training run, bundle and reports, nothing else."""
    entries = list(d.iterdir())
    return bool(entries) and all(
        (p.name in _QUICKSTART and p.is_dir() and not p.is_symlink() and _QUICKSTART[p.name](p))
        or (p.name in _QUICKSTART_FILES and p.is_file()) for p in entries)


def check_replaceable(out: str | os.PathLike, force: bool, is_ours: IsOurs, what: str) -> None:
    """Raise :class:`OutputExistsError` unless ``out`` may be (re)written: absent, empty, or ``force`` and ours.

    ``what`` names the kind of output in messages, with its article (``"an export bundle"``); nothing is touched either way.
    """
    out = Path(out)
    if not os.path.lexists(out):
        return
    if out.is_symlink() or not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a directory; refusing to replace it")
    if not any(out.iterdir()):
        return
    if not force:
        raise OutputExistsError(f"{out}: already exists (use --force to replace {what})")
    if not is_ours(out):
        raise OutputExistsError(f"{out}: not {what} (nor empty); --force only replaces {what} or an empty "
                          "directory, so nothing was touched")


def _unwritable(out: str | os.PathLike, e: OSError) -> OutputError:
    return OutputError(f"{out}: cannot write there ({e.strerror or type(e).__name__})")


def swap_in(tmp: Path, out: str | os.PathLike, *, force: bool, is_ours: IsOurs, what: str) -> Path:
    """Rename the finished ``tmp`` to ``out``, replacing what :func:`check_replaceable` allows (checked again)."""
    check_replaceable(out, force, is_ours, what)
    full = Path(os.path.abspath(out))
    with set_aside(full):
        tmp.rename(full)
    return Path(out)


@contextlib.contextmanager
def building(out: str | os.PathLike, *, force: bool, is_ours: IsOurs, what: str) -> Iterator[Path]:
    """Yield a temporary directory beside ``out`` to fill; on success it replaces ``out`` under the ``--force``
    rule (:func:`swap_in`), on failure it is deleted and ``out`` is untouched."""
    with contextlib.ExitStack() as stack:
        try:
            tmp = stack.enter_context(atomic.atomic_dir(
                out, swap=lambda t, o: swap_in(t, o, force=force, is_ours=is_ours, what=what)))
        except OSError as e:
            raise _unwritable(out, e) from None
        yield tmp


@contextlib.contextmanager
def set_aside(out: str | os.PathLike) -> Iterator[None]:
    """Move an existing ``out`` beside itself for the block; deleted if the block succeeds, restored if not.

    Call only after :func:`check_replaceable`. An empty directory is simply removed.
    """
    out = Path(os.path.abspath(out))
    old = None
    if os.path.lexists(out):
        if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
            out.rmdir()
        else:
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
    try:
        yield
    except BaseException:
        if old is not None and not os.path.lexists(out):
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def removed_if_unused(out: str | os.PathLike) -> Iterator[None]:
    """If the block fails, remove the directories it created for ``out`` that are still empty.

    Only directories absent on entry are candidates, and only empty ones are removed (``rmdir``), so
    a failed run never deletes anything it did not create or anything written into them.
    """
    out = Path(out).absolute()
    created = [p for p in (out, *out.parents) if not os.path.lexists(p)]  # deepest first
    try:
        yield
    except BaseException:
        for p in created:
            try:
                p.rmdir()
            except OSError:
                break
        raise


__all__ = ["OutputError", "OutputExistsError", "building", "check_replaceable", "is_bundle", "is_quickstart_dir",
           "is_synth_dataset", "is_train_dir", "is_triton_repo", "removed_if_unused", "set_aside", "swap_in"]
