"""Writing an imported dataset: split JSONL files, ``import.json``, and ``images/`` with ``--copy``; atomically.

The output folder appears whole or not at all (built beside ``--out``, then renamed), and ``--force`` replaces
only a folder this command wrote (``pvlm.outdir``'s rule).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from runtime.atomic import write_json
from runtime.attribute_schema import ATTRIBUTE_KEYS

from ..outdir import building, check_replaceable
from .matfile import SourceError
from .options import ImportReport
from .record import SPLITS, ImportedRecord

log = logging.getLogger(__name__)
_OURS = frozenset((*(f"{s}.jsonl" for s in SPLITS), "import.json", "images"))


def is_imported_dataset(d: Path) -> bool:
    """A ``pvlm-data import`` folder: ``import.json``, split JSONL files and ``images/``, nothing else."""
    names = {p.name for p in d.iterdir()}
    return "import.json" in names and names <= _OURS


def write_import(records: Iterable[ImportedRecord], out: Path, dataset: str, source: Path, report: ImportReport,
                 copy: bool = False, force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Write ``records`` under ``out``; returns the summary also written to ``out/import.json``."""
    check_replaceable(out, force, is_imported_dataset, "an imported dataset")
    with building(out, force=force, is_ours=is_imported_dataset, what="an imported dataset") as tmp:
        stats = _Stats()
        with contextlib.ExitStack() as files_open:
            files: dict[str, IO[str]] = {}
            for rec in tqdm(records, desc=f"import {dataset}", unit="img", disable=not progress):
                if not rec.image.is_file():
                    stats.missing(rec.image)
                    continue
                image = _place(rec, tmp) if copy else str(rec.image.resolve())
                if rec.split not in files:
                    files[rec.split] = files_open.enter_context(open(tmp / f"{rec.split}.jsonl", "w", encoding="utf-8"))
                row = rec.row(dataset, image)
                files[rec.split].write(json.dumps(row, ensure_ascii=False) + "\n")
                stats.add(rec.split, row)
        summary = stats.summary(dataset, source, report, copy)
        if not stats.written:
            raise SourceError(f"{source}: none of the {stats.n_missing} images it lists were found "
                                    f"(first: {stats.first_missing}); give --images DIR")
        write_json(tmp / "import.json", summary)
    if stats.n_missing:
        log.warning("%s: %d listed image(s) not found and skipped (first: %s)", source, stats.n_missing,
                    stats.first_missing)
    return summary


def _place(rec: ImportedRecord, tmp: Path) -> str:
    rel = Path("images") / rec.rel
    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(rec.image, tmp / rel)
    return rel.as_posix()


class _Stats:
    """Counts for ``import.json``: rows per split and caption source, known values per field, missing images."""

    def __init__(self) -> None:
        self.splits: Counter[str] = Counter()
        self.captions: Counter[str] = Counter()
        self.known: Counter[str] = Counter()
        self.n_missing, self.first_missing = 0, ""

    @property
    def written(self) -> int:
        return sum(self.splits.values())

    def missing(self, image: Path) -> None:
        self.n_missing += 1
        self.first_missing = self.first_missing or str(image)

    def add(self, split: str, row: dict[str, Any]) -> None:
        self.splits[split] += 1
        self.captions[row["caption_source"]] += 1
        self.known.update(k for k, v in row["attributes"].items() if v is not None)

    def summary(self, dataset: str, source: Path, report: ImportReport, copy: bool) -> dict[str, Any]:
        return {
            "format": dataset, "source": str(source.resolve()), "images": "copied" if copy else "referenced",
            "splits": {s: self.splits[s] for s in SPLITS if self.splits[s]},
            "caption_source": dict(self.captions),
            "known_per_field": {k: self.known[k] for k in ATTRIBUTE_KEYS},
            "missing_images": self.n_missing,
            "unmapped_labels": sorted(report.unmapped),
        }


__all__ = ["is_imported_dataset", "write_import"]
