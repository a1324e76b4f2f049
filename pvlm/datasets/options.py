"""What every reader takes (:class:`ImportOptions`), what it reports back (:class:`ImportReport`), and the
search for a dataset's annotation file and image folder inside SOURCE."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .matfile import SourceError


@dataclass(frozen=True)
class ImportOptions:
    """``images``: where the image files are (default: the dataset's usual folder under SOURCE);
    ``annotation``: the label file (default: its usual place); ``val_fraction``/``seed``: the hold-out of
    datasets without a validation partition (by person where known); ``partition``: RAP v2's partition (1-5)."""

    images: Path | None = None
    annotation: Path | None = None
    val_fraction: float = 0.1
    seed: int = 0
    partition: int = 1

    def validate(self) -> None:
        """Raise ValueError naming the option that is out of range."""
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.partition < 1:
            raise ValueError(f"--partition must be >= 1, got {self.partition}")
        if self.images is not None and not self.images.is_dir():
            raise ValueError(f"--images {self.images}: no such folder")


@dataclass
class ImportReport:
    """What a reader saw besides records: source labels no rule reads (listed in ``import.json``)."""

    unmapped: set[str] = field(default_factory=set)

    def labels(self, names: Iterable[str], known: Iterable[str]) -> None:
        """Note every name of ``names`` not in ``known``."""
        self.unmapped.update(set(names) - set(known))


def find_file(source: Path, candidates: tuple[str, ...]) -> Path:
    """The first of ``candidates`` (paths relative to ``source``) that exists; ``source`` itself if it is a file."""
    if source.is_file():
        return source
    for c in candidates:
        if (source / c).is_file():
            return source / c
    raise SourceError(f"{source}: none of {', '.join(candidates)} found (or give --annotation FILE)")


def find_image_dir(source: Path, candidates: tuple[str, ...], first_image: str) -> Path:
    """The first of ``candidates`` under ``source`` (the annotation's folder if ``source`` is a file) holding
    ``first_image``; the first existing folder when none does (the import then reports the missing images)."""
    base = source.parent if source.is_file() else source
    existing = [base / c for c in candidates if (base / c).is_dir()]
    for d in existing:
        if (d / first_image).is_file():
            return d
    if not existing:
        raise SourceError(f"{base}: no image folder ({', '.join(candidates)}); give --images DIR")
    return existing[0]


__all__ = ["ImportOptions", "ImportReport", "find_file", "find_image_dir"]
