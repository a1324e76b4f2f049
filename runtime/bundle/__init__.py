"""Reading and checking an export bundle: the typed :class:`Manifest` (one schema, shared with the writer in
``export``), artefact hashes, the content hash that binds the manifest to its graphs, and the rule that every
file it names lies inside the bundle directory. The format is specified in ``docs/bundle.md``."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engines import Engine, parse_engines
from .attribute_heads import AttributeHeads, HeadField
from .canonical_json import canonical_json
from .files import file_kind, open_regular, read_regular, sha256_path
from .format import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    CONTENT_HASH_ALGORITHM,
    DTYPES,
    HASHED_SECTIONS,
    MAX_BATCH,
    MAX_D_MODEL,
    MAX_DIM,
    MAX_GRAPH_IO,
    MAX_HEADS,
    MAX_IMAGE_SIDE,
    MAX_JSON_DEPTH,
    MAX_LAYERS,
    MAX_MANIFEST_BYTES,
    MAX_POSITIONS,
    MAX_RANK,
    MAX_TOKEN_CHARS,
    MAX_VISUAL_TOKENS,
    MAX_VOCAB,
    MEAN_RANGE,
    SPECIAL_TOKENS,
    STD_RANGE,
    SUPPORTED_VERSIONS,
    BundleError,
)
from .manifest import (
    GraphEntry,
    Limits,
    Manifest,
    ModelConfig,
    Preprocessing,
    TensorEntry,
    check_relative_path,
    parse_manifest_json,
)
from .onnx_io import ONNX_DTYPES, OnnxTensor, onnx_graph_io


def is_bundle(d: Path) -> bool:
    """A directory with a ``manifest.json`` carrying the bundle format tag (not otherwise validated)."""
    try:
        data = parse_manifest_json(read_regular(Path(d) / "manifest.json", MAX_MANIFEST_BYTES))
    except (OSError, ValueError, RecursionError):  # BundleError is a ValueError
        return False
    return isinstance(data, dict) and data.get("format") == BUNDLE_FORMAT


def inside(root: Path, name: str) -> Path:
    """``root / name``, refused (BundleError) unless it resolves, symlinks included, inside ``root``."""
    try:
        base = root.resolve()
        target = (root / name).resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop: RuntimeError before Python 3.13, OSError since
        raise BundleError(f"{root}: manifest entry {name!r} cannot be resolved ({e}); refusing it") from None
    if target == base or not target.is_relative_to(base):
        raise BundleError(f"{root}: manifest entry {name!r} resolves outside the bundle ({target}); refusing it")
    return target


def _regular_or_absent(path: Path) -> None:
    """BundleError when ``path`` exists but is neither a regular file nor a folder (a FIFO would hang a reader)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise BundleError(f"{path}: unreadable ({e.strerror or type(e).__name__})") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise BundleError(f"{path}: {file_kind(mode)}, not a regular file; refusing it")


def _io_text(tensors: Sequence[OnnxTensor]) -> str:
    return ", ".join(f"{n} {d} {'?' if s is None else list(s)}" for n, d, s in tensors)


def _check_graph_file(path: Path, entry: GraphEntry, name: str) -> None:
    """BundleError unless the ONNX file's inputs and outputs are the manifest entry's: names in order,
    element types, ranks, fixed sizes (a dimension name in the manifest: any dynamic dimension)."""
    inputs, outputs = onnx_graph_io(path)
    for side, declared, actual in (("inputs", entry.inputs, inputs), ("outputs", entry.outputs, outputs)):
        if [n for n, _, _ in actual] != list(declared):
            names = ", ".join(n for n, _, _ in actual[:6]) + ("..." if len(actual) > 6 else "")
            raise BundleError(f"{path}: the graph's {side} are [{names}], not graphs.{name}.{side} of the manifest")
        for tensor, dtype, shape in actual:
            t = declared[tensor]
            same = dtype == t.dtype and shape is not None and len(shape) == len(t.shape) and all(
                (isinstance(d, str) and not isinstance(g, int)) or d == g for d, g in zip(t.shape, shape))
            if not same:
                raise BundleError(f"{path}: {tensor} is {_io_text([(tensor, dtype, shape)])[len(tensor) + 1:]} in "
                                  f"the graph, but graphs.{name}.{side}.{tensor} is {t.dtype} {list(t.shape)}")


@dataclass(frozen=True)
class Bundle:
    """A bundle directory and its validated :class:`Manifest` (``bundle.manifest``)."""

    root: Path
    manifest: Manifest

    @classmethod
    def load(cls, root: str | Path, verify: bool = True) -> "Bundle":
        """Read and validate the manifest (schema, limits, consistency), check that every named file stays inside
        ``root`` and is a regular file or folder, and (``verify``) :meth:`verify` the whole bundle."""
        root = Path(root)
        path = root / "manifest.json"
        if not root.is_dir():
            raise BundleError(f"{root}: bundle directory does not exist")
        if not os.path.lexists(path):
            raise BundleError(f"{root}: not an export bundle (no manifest.json)")
        inside(root, "manifest.json")  # a symlinked manifest counts too, before anything is read
        try:
            data = parse_manifest_json(read_regular(path, MAX_MANIFEST_BYTES))
        except OSError as e:
            raise BundleError(f"{path}: unreadable ({e.strerror or type(e).__name__})") from None
        except BundleError:
            raise
        except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise BundleError(f"{path}: corrupt manifest ({type(e).__name__}: {str(e)[:80]})") from None
        try:
            manifest = Manifest.from_dict(data)
            manifest.check_consistency()
        except BundleError as e:
            raise BundleError(f"{path}: {e}") from None
        for name in manifest.files():
            _regular_or_absent(inside(root, name))
        bundle = cls(root, manifest)
        if verify:
            bundle.verify()
        return bundle

    def verify(self, names: list[str] | None = None) -> None:
        """Check sha256 of the named artefacts; with no names, of all the manifest lists, and also the manifest's
        ``content_hash`` (first) and every ONNX graph's inputs and outputs against its manifest entry (last)."""
        whole = not names
        if whole:
            try:
                self.manifest.check_content_hash()
            except BundleError as e:
                raise BundleError(f"{self.root / 'manifest.json'}: {e}") from None
        artifacts = self.manifest.artifacts
        for name in names or list(artifacts):
            sha = artifacts.get(name)
            if sha is None:
                raise BundleError(f"{self.root}: {name} is not listed in the manifest")
            p = inside(self.root, name)
            if not p.exists():
                raise BundleError(f"{self.root / name}: missing from the bundle")
            if p.is_dir():  # a package (.mlpackage): nothing inside it may point out of the bundle either
                for f in p.rglob("*"):
                    inside(self.root, f"{name}/{f.relative_to(p).as_posix()}")
            try:
                actual = sha256_path(p)
            except OSError as e:
                raise BundleError(f"{self.root / name}: unreadable ({e.strerror or type(e).__name__})") from None
            if actual != sha:
                raise BundleError(f"{self.root / name}: sha256 does not match the manifest (file modified or corrupt)")
        if whole:
            graphs = self.manifest.graphs
            files = {(n, g.file) for n, g in graphs.items()}
            files |= {(n, f) for v in self.manifest.variants.values() for n, f in v.items()}
            for graph, file in sorted(files):
                try:
                    _check_graph_file(inside(self.root, file), graphs[graph], graph)
                except OSError as e:
                    raise BundleError(f"{self.root / file}: unreadable ({e.strerror or type(e).__name__})") from None

    @property
    def tokens(self) -> list[str]:
        """Vocabulary, id -> token."""
        return list(self.manifest.tokens)

    @property
    def special(self) -> dict[str, int]:
        """Special token ids (pad, bos, eos, unk)."""
        return dict(self.manifest.special)

    @property
    def preprocess(self) -> dict[str, Any]:
        """Input size, resize rule, mean/std, channel order (the raw section; :attr:`preprocessing` is typed)."""
        return dict(self.manifest.preprocess)

    @property
    def preprocessing(self) -> Preprocessing:
        """Input size, resize rule, mean/std, channel order, typed."""
        return self.manifest.preprocessing

    @property
    def limits(self) -> Limits:
        """What the graphs were exported for: max_batch, max_new_tokens, max_positions."""
        return self.manifest.limits

    @property
    def model(self) -> dict[str, Any]:
        """The model config as a plain dict (:attr:`model_config` has the sizes, typed)."""
        return dict(self.manifest.model)

    @property
    def model_config(self) -> ModelConfig:
        """The model config's sizes, typed."""
        return self.manifest.model_config

    def find_source_checkpoint(self) -> Path:
        """The checkpoint the bundle was exported from, from any working directory: the path recorded relative
        to the bundle, else the absolute path recorded at export (the bundle moved without it); older bundles
        recorded the path as given to export. :class:`BundleError` names every place looked at."""
        src, hint = self.manifest.source_checkpoint, self.manifest.source_checkpoint_absolute
        if not src:
            raise BundleError("the bundle manifest names no source checkpoint")
        candidates = [self.root / src] + [Path(p) for p in (hint, src) if p]
        for cand in dict.fromkeys(candidates):
            if cand.is_file():
                return cand.resolve()
        looked = ", ".join(str(c) for c in dict.fromkeys(candidates))
        raise BundleError(f"the bundle's source checkpoint is missing (looked at {looked})")

    def graph(self, name: str) -> GraphEntry:
        """A graph's manifest entry: file, ordered inputs and outputs (dtype, shape)."""
        if name not in self.manifest.graphs:
            raise BundleError(f"{self.root}: the manifest has no {name!r} graph")
        return self.manifest.graphs[name]

    @property
    def precisions(self) -> tuple[str, ...]:
        """Precisions the bundle holds graphs for: ``fp32`` always, then its variants (``fp16``, ``int8``)."""
        return ("fp32", *self.manifest.variants)

    def check_precision(self, precision: str) -> None:
        """A clear :class:`BundleError` unless the bundle holds ``precision``: as ONNX graphs or compiled engines."""
        if precision in self.precisions or any(e.precision == precision for e in self.engines):
            return
        raise BundleError(f"{self.root}: the bundle has no {precision} graphs (it holds "
                          f"{', '.join(self.precisions)}); re-export it with pvlm-export onnx --{precision}")

    def variant_graphs(self, precision: str) -> dict[str, str]:
        """Graph name -> file of the graphs a precision variant replaces (``{}`` for fp32).

        A variant lists only the graphs it replaces; the others run in FP32 (e.g. an INT8
        encoder in front of the FP32 decoder). Their inputs and outputs are the FP32 graph's.
        """
        if precision == "fp32":
            return {}
        if precision not in self.manifest.variants:
            raise BundleError(f"{self.root}: the bundle has no {precision} ONNX graphs (it holds "
                              f"{', '.join(self.precisions)}); re-export it with pvlm-export onnx --{precision}")
        return dict(self.manifest.variants[precision])

    @property
    def engines(self) -> list[Engine]:
        """The manifest's compiled graphs (TensorRT plans, CoreML packages); see ``runtime/engines.py``."""
        try:
            return parse_engines(self.manifest.raw.get("engines"))
        except ValueError as e:
            raise BundleError(f"{self.root}: {e}") from None

    def path(self, name: str, precision: str = "fp32") -> Path:
        """Path of a graph's file in ``precision`` (the FP32 file where the variant does not replace it;
        inside the bundle: checked at load)."""
        self.graph(name)
        return self.root / self.variant_graphs(precision).get(name, self.manifest.graphs[name].file)


__all__ = ["AttributeHeads", "BUNDLE_FORMAT", "BUNDLE_VERSION", "Bundle", "BundleError", "CONTENT_HASH_ALGORITHM", "DTYPES", "GraphEntry", "HASHED_SECTIONS", "HeadField", "Limits", "MAX_BATCH", "MAX_DIM", "MAX_D_MODEL", "MAX_GRAPH_IO", "MAX_HEADS", "MAX_IMAGE_SIDE", "MAX_JSON_DEPTH", "MAX_LAYERS", "MAX_MANIFEST_BYTES", "MAX_POSITIONS", "MAX_RANK", "MAX_TOKEN_CHARS", "MAX_VISUAL_TOKENS", "MAX_VOCAB", "MEAN_RANGE", "Manifest", "ModelConfig", "ONNX_DTYPES", "OnnxTensor", "Preprocessing", "SPECIAL_TOKENS", "STD_RANGE", "SUPPORTED_VERSIONS", "TensorEntry", "canonical_json", "check_relative_path", "inside", "is_bundle", "onnx_graph_io", "open_regular", "parse_manifest_json", "read_regular", "sha256_path"]
