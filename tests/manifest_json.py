"""Read and write a bundle's manifest.json as plain JSON, for tests that tamper with it."""

from __future__ import annotations

import json
from pathlib import Path


def read(b: Path) -> dict:
    """The bundle's manifest as a dict."""
    return json.loads((b / "manifest.json").read_text())


def write(b: Path, manifest: dict) -> None:
    """Replace the bundle's manifest (no re-hashing: the test decides what is consistent)."""
    (b / "manifest.json").write_text(json.dumps(manifest))
