"""Atomic writes: a file or a directory appears whole at its path, or not at all (standard library only).

Every writer builds in a temporary sibling (same directory, so same filesystem and the final
``os.replace`` is atomic), and removes it if anything fails, Ctrl-C included:

- files: :func:`write_text`, :func:`write_json`, or :func:`atomic_path` for a
  writer that wants a path (``torch.save``); temporary name ``.NAME.<pid>.<random>.tmp``, fsynced
  before the rename, with the usual umask-derived permissions;
- directories: :func:`atomic_dir` yields ``.NAME.tmp-<random>`` to fill, then ``swap`` puts it in place
  (by default: only where ``NAME`` is absent or an empty directory). ``pvlm.outdir`` passes its
  ``--force`` rule as ``swap``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

Swap = Callable[[Path, Path], Any]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` for the block to write (e.g. ``torch.save(obj, tmp)``); fsynced and
    renamed over ``path`` when the block succeeds, removed when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data is on disk before the name points at it
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp, open(tmp, "x", encoding="utf-8") as f:  # "x": never follow what sits there
        f.write(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2, ensure_ascii: bool = True,
               default: Callable[[Any], Any] | None = None) -> Path:
    """Write ``obj`` as JSON and a final newline to ``path`` atomically (options as in ``json.dumps``)."""
    return write_text(path, json.dumps(obj, indent=indent, ensure_ascii=ensure_ascii, default=default) + "\n")


def temp_dir_beside(out: str | os.PathLike) -> Path:
    """A new empty directory ``.NAME.tmp-<random>`` next to ``out`` (mode 0755; the parent is created if missing)."""
    full = Path(os.path.abspath(out))  # "--out ." has no name and no parent of its own
    full.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{full.name}.tmp-", dir=full.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would make a finished bundle or dataset private to its writer
    return tmp


def rename_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` to ``out``, which must be absent or an empty directory (else FileExistsError)."""
    full = Path(os.path.abspath(out))
    if os.path.lexists(full):
        if full.is_symlink() or not full.is_dir() or any(full.iterdir()):
            raise FileExistsError(f"{out} already exists and is not empty")
        full.rmdir()
    os.replace(tmp, full)


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, swap: Swap = rename_into_place) -> Iterator[Path]:
    """Yield a temporary sibling of ``out`` to fill; when the block succeeds, ``swap(tmp, out)`` puts it in place.

    If the block or the swap fails, the temporary directory is deleted and ``out`` is as the swap left it
    (:func:`rename_into_place` touches nothing before its rename).
    """
    tmp = temp_dir_beside(out)
    try:
        yield tmp
        swap(tmp, Path(out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful swap


__all__ = ["atomic_dir", "atomic_path", "rename_into_place", "temp_dir_beside", "write_json",
           "write_text"]
