"""Writing the bundle's ``manifest.json`` (format: ``docs/bundle.md``): the runtime's :class:`~runtime.bundle.Manifest`,
serialised with its content hash."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from runtime.atomic import write_json
from runtime.bundle import Bundle, Manifest, sha256_path  # the reader's own schema and hash: writer and reader agree
from runtime.engines import Engine


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


def write_manifest(bundle: Path, manifest: Manifest | Mapping[str, Any]) -> Path:
    """Write ``manifest.json`` atomically, sealed with the ``content_hash`` of what it holds; a plain mapping is
    validated as a :class:`Manifest` (schema, limits, consistency) first."""
    if not isinstance(manifest, Manifest):
        manifest = Manifest.from_dict(json.loads(json.dumps(manifest)))  # as the reader will see it (tuples -> lists)
        manifest.check_consistency()
    return write_json(Path(bundle) / "manifest.json", manifest.sealed().to_dict())


def record_engines(bundle: Bundle, built: Sequence[Engine], replaced: Callable[[Engine], bool],
                   extra: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Rewrite ``bundle``'s manifest with ``built`` in place of the engines ``replaced`` picks; the built files
    (and ``extra``: file -> ``{sha256, bytes}``) are listed as artefacts. The manifest is the one ``bundle`` loaded."""
    keep = [e for e in bundle.engines if not replaced(e)]
    artifacts = {e.file: {"sha256": e.sha256, "bytes": e.bytes} for e in built} | dict(extra or {})
    return write_manifest(bundle.root, bundle.manifest.with_artifacts(artifacts).with_engines([*keep, *built]))
