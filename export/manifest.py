"""Writing the bundle's ``manifest.json`` (DESIGN.md contract 2)."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

from runtime.atomic import write_json
from runtime.bundle import Manifest, sha256_path  # the reader's own schema and hash: writer and reader agree

BUNDLE_FORMAT = "pvlm-bundle"
BUNDLE_VERSION = 1


def artifact_entry(bundle: Path, name: str) -> dict[str, Any]:
    """``{"sha256": ..., "bytes": ...}`` for a file in the bundle."""
    p = bundle / name
    size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
    return {"sha256": sha256_path(p), "bytes": size}


def producer_versions() -> dict[str, str]:
    """Versions of the libraries that produced the bundle."""
    out = {}
    for pkg in ("personvlm-toolkit", "torch", "timm", "onnx", "onnxruntime", "onnxscript"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def read_manifest(bundle: Path) -> dict[str, Any]:
    """Load ``manifest.json`` from a bundle directory."""
    path = Path(bundle) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{bundle}: not an export bundle (no manifest.json)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: corrupt manifest ({e})") from None


def write_manifest(bundle: Path, manifest: dict[str, Any]) -> Path:
    """Validate ``manifest`` against the runtime's :class:`Manifest` schema, then write ``manifest.json`` atomically."""
    Manifest.from_dict(json.loads(json.dumps(manifest)))  # as the reader will see it (tuples -> lists)
    return write_json(Path(bundle) / "manifest.json", manifest)
