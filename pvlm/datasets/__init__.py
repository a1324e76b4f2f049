"""``pvlm-data import``: datasets users already own, mapped onto the attribute schema and written as the JSONL
``pvlm-train`` reads.

One module per format (its reader, its label table, what it drops): :mod:`.msp60k`, :mod:`.pa100k`,
:mod:`.peta`, :mod:`.rap2`, :mod:`.market1501`; the table engine in :mod:`.mapping`; template captions for
label-only datasets in :mod:`.template`; the output folder in :mod:`.writer`. The tables, with what is
ambiguous and where each attribute list was confirmed: docs/datasets.md.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from .matfile import SourceError
from .options import ImportOptions, ImportReport

FORMATS: tuple[str, ...] = ("msp60k", "pa100k", "peta", "rap2", "market1501")


def format_module(name: str) -> Any:
    """The module of one format (``read``, ``TABLE``, ``DROPPED``)."""
    if name not in FORMATS:
        raise ValueError(f"unknown dataset format {name!r}; choose from {', '.join(FORMATS)}")
    return importlib.import_module(f".{name}", __name__)


def import_dataset(name: str, source: str | Path, out: str | Path, opts: ImportOptions | None = None,
                   copy: bool = False, force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Import ``source`` (format ``name``) into ``out``; returns the summary written to ``out/import.json``."""
    from .writer import write_import

    opts = opts or ImportOptions()
    opts.validate()
    source = Path(source)
    if not source.exists():
        raise SourceError(f"{source}: no such file or folder")
    module = format_module(name)
    report = ImportReport()
    return write_import(module.read(source, opts, report), Path(out), name, source, report, copy=copy, force=force,
                        progress=progress)


__all__ = ["FORMATS", "ImportOptions", "SourceError", "format_module", "import_dataset"]
