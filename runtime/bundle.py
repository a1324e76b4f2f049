"""Reading and checking an export bundle (manifest, artefact hashes, format version)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .engines import Engine, parse_engines

SUPPORTED_FORMAT = "pvlm-bundle"
SUPPORTED_VERSIONS = (1,)


class BundleError(ValueError):
    """A bundle that is missing, tampered with, or of an unknown format."""


def sha256_path(path: Path) -> str:
    """Hex sha256 of a file, or of every file under a folder (names included), e.g. an .mlpackage."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A loaded ``manifest.json`` with convenient views of it."""

    root: Path
    manifest: dict[str, Any]

    @classmethod
    def load(cls, root: str | Path, verify: bool = True) -> "Bundle":
        """Read the manifest, check format/version and (``verify``) every artefact's sha256."""
        root = Path(root)
        path = root / "manifest.json"
        if not root.is_dir():
            raise BundleError(f"{root}: bundle directory does not exist")
        if not path.is_file():
            raise BundleError(f"{root}: not an export bundle (no manifest.json)")
        try:
            manifest = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BundleError(f"{path}: corrupt manifest ({e})") from None
        if manifest.get("format") != SUPPORTED_FORMAT:
            raise BundleError(f"{path}: not a PersonVLM bundle manifest (format {manifest.get('format')!r})")
        if manifest.get("version") not in SUPPORTED_VERSIONS:
            raise BundleError(f"{path}: bundle format version {manifest.get('version')!r} is not supported "
                              f"(this runtime reads {', '.join(map(str, SUPPORTED_VERSIONS))}); re-export it")
        bundle = cls(root, manifest)
        if verify:
            bundle.verify()
        return bundle

    def verify(self, names: list[str] | None = None) -> None:
        """Check sha256 of the named artefacts (default: all listed in the manifest)."""
        artifacts = self.manifest.get("artifacts") or {}
        graph_files = [g["file"] for g in self.manifest.get("graphs", {}).values()]
        graph_files += [f for v in self.manifest.get("variants", {}).values() for f in v["graphs"].values()]
        unlisted = [f for f in graph_files if f not in artifacts]
        if unlisted:
            raise BundleError(f"{self.root}: manifest lists no sha256 for {', '.join(unlisted)}")
        for name in names or list(artifacts):
            entry = artifacts.get(name)
            if entry is None:
                raise BundleError(f"{self.root}: {name} is not listed in the manifest")
            p = self.root / name
            if not p.exists():
                raise BundleError(f"{p}: missing from the bundle")
            if sha256_path(p) != entry["sha256"]:
                raise BundleError(f"{p}: sha256 does not match the manifest (file modified or corrupt)")

    @property
    def tokens(self) -> list[str]:
        """Vocabulary, id -> token."""
        return self.manifest["vocab"]["tokens"]

    @property
    def special(self) -> dict[str, int]:
        """Special token ids (pad, bos, eos, unk)."""
        return self.manifest["special_tokens"]

    @property
    def preprocess(self) -> dict[str, Any]:
        """Input size, resize rule, mean/std, channel order."""
        return self.manifest["preprocess"]

    @property
    def limits(self) -> dict[str, int]:
        """max_batch, max_new_tokens, max_positions."""
        return self.manifest["limits"]

    @property
    def model(self) -> dict[str, Any]:
        """The model config as a plain dict."""
        return self.manifest["model"]

    def graph(self, name: str) -> dict[str, Any]:
        """A graph's manifest entry (file, inputs, outputs)."""
        return self.manifest["graphs"][name]

    @property
    def precisions(self) -> tuple[str, ...]:
        """Precisions the bundle holds graphs for: ``fp32`` always, then its variants (``fp16``, ``int8``)."""
        return ("fp32", *self.manifest.get("variants", {}))

    def variant_graphs(self, precision: str) -> dict[str, str]:
        """Graph name -> file of the graphs a precision variant replaces (``{}`` for fp32).

        A variant lists only the graphs it replaces; the others run in FP32 (e.g. an INT8
        encoder in front of the FP32 decoder). Their inputs and outputs are the FP32 graph's.
        """
        if precision == "fp32":
            return {}
        variants = self.manifest.get("variants", {})
        if precision not in variants:
            raise BundleError(f"{self.root}: the bundle has no {precision} graphs (it holds "
                              f"{', '.join(self.precisions)}); re-export it with pvlm-export onnx --{precision}")
        return dict(variants[precision]["graphs"])

    @property
    def engines(self) -> list[Engine]:
        """The manifest's compiled graphs (TensorRT plans, CoreML packages); see ``runtime/engines.py``."""
        try:
            return parse_engines(self.manifest.get("engines"))
        except ValueError as e:
            raise BundleError(f"{self.root}: {e}") from None

    def path(self, name: str, precision: str = "fp32") -> Path:
        """Path of a graph's file in ``precision`` (the FP32 file where the variant does not replace it)."""
        return self.root / self.variant_graphs(precision).get(name, self.graph(name)["file"])
