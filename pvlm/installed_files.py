"""Files that installed packages ship (sample photographs), found through their metadata without importing them."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path


def locate(package: str, file: str) -> Path | None:
    """The installed file ``file`` of distribution ``package``, or None when either is not installed."""
    try:
        path = Path(str(importlib.metadata.distribution(package).locate_file(file)))
    except importlib.metadata.PackageNotFoundError:
        return None
    return path if path.is_file() else None
