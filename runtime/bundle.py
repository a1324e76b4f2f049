"""Reading and checking an export bundle: the typed :class:`Manifest` (one schema, shared with the writer in
``export``), artefact hashes, and the rule that every file it names lies inside the bundle directory."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from .engines import Engine, parse_engines
from .verification import ParityReport, Verification

BUNDLE_FORMAT = "pvlm-bundle"  # the manifest's format tag, written by export and checked here
BUNDLE_VERSION = 1  # the version export writes
SUPPORTED_VERSIONS = (BUNDLE_VERSION,)


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


_SHA256 = re.compile(r"[0-9a-f]{64}")
_REQUIRED_GRAPHS = ("encoder", "decoder")
_PATH_KEYS = ("file", "path")  # in any entry (engines, variants, ...): a file of the bundle
_NOT_FILES = ("source", "verification", "producer", "model")  # free-form sections; "source" names the checkpoint


class _Invalid(Exception):
    """Internal: where in the manifest (dotted) and what is wrong."""


def _expect(value: Any, kind: type | tuple[type, ...], where: str, what: str) -> Any:
    ok = isinstance(value, kind) and not (isinstance(value, bool) and kind in (int, (int, float)))
    if not ok:
        raise _Invalid(f"{where}: expected {what}, got {_short(value)}")
    return value


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list, str, int, float, bool)) or value is None else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _section(data: Mapping[str, Any], key: str, where: str = "") -> Mapping[str, Any]:
    name = f"{where}.{key}" if where else key
    if key not in data:
        raise _Invalid(f"{name}: missing")
    return _expect(data[key], dict, name, "an object")


def _positive_int(data: Mapping[str, Any], key: str, where: str) -> int:
    if key not in data:
        raise _Invalid(f"{where}.{key}: missing")
    value = _expect(data[key], int, f"{where}.{key}", "an integer")
    if value < 1:
        raise _Invalid(f"{where}.{key}: expected >= 1, got {value}")
    return value


def check_relative_path(value: Any, where: str) -> str:
    """A manifest file name: a non-empty relative path without ``..``; raises BundleError naming ``where``."""
    try:
        return _relative_path(value, where)
    except _Invalid as e:
        raise BundleError(f"invalid manifest: {e}") from None


def _relative_path(value: Any, where: str) -> str:
    _expect(value, str, where, "a file name")
    posix, windows = PurePosixPath(value), PureWindowsPath(value)
    if not value or "\x00" in value or posix.is_absolute() or windows.is_absolute() or windows.drive:
        raise _Invalid(f"{where}: {_short(value)} is not a relative path inside the bundle")
    if ".." in posix.parts or ".." in windows.parts or posix == PurePosixPath("."):
        raise _Invalid(f"{where}: {_short(value)} points outside the bundle")
    return value


def _tensors(data: Any, where: str) -> dict[str, TensorEntry]:
    _expect(data, dict, where, "an object of tensors")
    out = {}
    for name, t in data.items():
        _expect(t, dict, f"{where}.{name}", "an object with dtype and shape")
        dtype = _expect(t.get("dtype"), str, f"{where}.{name}.dtype", "a string")
        shape = _expect(t.get("shape"), list, f"{where}.{name}.shape", "a list")
        for i, d in enumerate(shape):
            _expect(d, (int, str), f"{where}.{name}.shape[{i}]", "an integer or a dimension name")
        out[name] = TensorEntry(dtype, tuple(shape))
    return out


def _named_files(data: Any, where: str) -> Iterator[tuple[str, Any]]:
    """(where, value) of every ``file``/``path`` field at any depth (engines, variants, future entries)."""
    if isinstance(data, dict):
        for k, v in data.items():
            at = f"{where}.{k}" if where else str(k)
            if k in _PATH_KEYS and not isinstance(v, (dict, list)):
                yield at, v
            elif not (where == "" and k in _NOT_FILES):
                yield from _named_files(v, at)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _named_files(v, f"{where}[{i}]")


def _variants(data: Any, graphs: Mapping[str, GraphEntry]) -> dict[str, dict[str, str]]:
    """``variants``: precision -> {graph name: file}; each graph one of ``graphs``, each file a bundle file."""
    out: dict[str, dict[str, str]] = {}
    for precision, v in _expect(data, dict, "variants", "an object").items():
        at = f"variants.{precision}"
        files = _expect(_expect(v, dict, at, "an object with graphs").get("graphs"), dict, f"{at}.graphs", "an object")
        for name, file in files.items():
            if name not in graphs:
                raise _Invalid(f"{at}.graphs.{name}: not a graph of the bundle")
            _relative_path(file, f"{at}.graphs.{name}")
        out[precision] = dict(files)
    return out


@dataclass(frozen=True)
class TensorEntry:
    """One graph input or output: dtype and shape (ints and dimension names)."""

    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class GraphEntry:
    """One graph: its file (relative to the bundle) and ordered inputs/outputs."""

    file: str
    inputs: Mapping[str, TensorEntry]
    outputs: Mapping[str, TensorEntry]

    def io(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``{"inputs": {name: {dtype, shape}}, "outputs": ...}`` as plain JSON (engine records carry it)."""
        return {side: {n: {"dtype": t.dtype, "shape": list(t.shape)} for n, t in tensors.items()}
                for side, tensors in (("inputs", self.inputs), ("outputs", self.outputs))}


@dataclass(frozen=True)
class Limits:
    """What the graphs were exported for."""

    max_batch: int
    max_new_tokens: int
    max_positions: int


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``, validated: the one schema export writes and the runtime reads.

    Export builds it with :meth:`create` and the ``with_*`` methods (each returns a new, validated
    manifest) and writes :meth:`to_dict`; readers use the typed fields and properties
    (``verification``, ``parity``, ``variant_reports``, ``source_checkpoint``...). Keys this version
    does not know stay readable through :meth:`get` / ``[]`` on the raw JSON; every ``file``/``path``
    field anywhere is a bundle file name (see :meth:`files`).
    """

    format: str
    version: int
    model: Mapping[str, Any]
    tokens: tuple[str, ...]
    special: Mapping[str, int]
    preprocess: Mapping[str, Any]
    graphs: Mapping[str, GraphEntry]
    limits: Limits
    artifacts: Mapping[str, str]  # file -> sha256
    raw: Mapping[str, Any]
    variants: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # precision -> {graph: file}

    @classmethod
    def from_dict(cls, data: Any) -> "Manifest":
        """Validate the manifest's shape; :class:`BundleError` with one line naming what is wrong."""
        try:
            return cls._parse(data)
        except _Invalid as e:
            raise BundleError(f"invalid manifest: {e}") from None

    @classmethod
    def _parse(cls, data: Any) -> "Manifest":
        _expect(data, dict, "manifest", "a JSON object")
        if data.get("format") != BUNDLE_FORMAT:
            raise _Invalid(f"format: not a PersonVLM bundle manifest (format {_short(data.get('format'))})")
        version = data.get("version")
        if isinstance(version, bool) or version not in SUPPORTED_VERSIONS:
            raise _Invalid(f"version: bundle format version {_short(version)} is not supported (this runtime reads "
                           f"{', '.join(map(str, SUPPORTED_VERSIONS))}); re-export it")
        model = _section(data, "model")
        tokens = _expect(_section(data, "vocab").get("tokens"), list, "vocab.tokens", "a list of strings")
        if not tokens or not all(isinstance(t, str) for t in tokens):
            raise _Invalid("vocab.tokens: expected a non-empty list of strings")
        special = dict(_section(data, "special_tokens"))
        for name in ("bos", "eos"):
            if name not in special:
                raise _Invalid(f"special_tokens.{name}: missing")
        for name, i in special.items():
            _expect(i, int, f"special_tokens.{name}", "a token id")
            if not 0 <= i < len(tokens):
                raise _Invalid(f"special_tokens.{name}: id {i} is outside the {len(tokens)}-token vocabulary")
        pre = _section(data, "preprocess")
        _positive_int(pre, "height", "preprocess")
        _positive_int(pre, "width", "preprocess")
        for key in ("mean", "std"):
            values = _expect(pre.get(key), list, f"preprocess.{key}", "a list of 3 numbers")
            if len(values) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                raise _Invalid(f"preprocess.{key}: expected a list of 3 numbers, got {_short(values)}")
        if any(v == 0 for v in pre["std"]):
            raise _Invalid("preprocess.std: a zero would divide by zero")
        graphs = {}
        for name, g in _section(data, "graphs").items():
            at = f"graphs.{name}"
            _expect(g, dict, at, "an object with file, inputs and outputs")
            graphs[name] = GraphEntry(_relative_path(g.get("file"), f"{at}.file"),
                                      _tensors(g.get("inputs"), f"{at}.inputs"), _tensors(g.get("outputs"), f"{at}.outputs"))
        for name in _REQUIRED_GRAPHS:
            if name not in graphs:
                raise _Invalid(f"graphs.{name}: missing")
        lim = _section(data, "limits")
        limits = Limits(*(_positive_int(lim, k, "limits") for k in ("max_batch", "max_new_tokens", "max_positions")))
        if limits.max_new_tokens > limits.max_positions:
            raise _Invalid(f"limits.max_new_tokens: {limits.max_new_tokens} exceeds max_positions {limits.max_positions}")
        artifacts = {}
        for file, entry in _section(data, "artifacts").items():
            _relative_path(file, f"artifacts[{_short(file)}]")
            _expect(entry, dict, f"artifacts.{file}", "an object with sha256")
            sha = _expect(entry.get("sha256"), str, f"artifacts.{file}.sha256", "a hex sha256")
            if not _SHA256.fullmatch(sha):
                raise _Invalid(f"artifacts.{file}.sha256: expected 64 lowercase hex digits, got {_short(sha)}")
            artifacts[file] = sha
        variants = _variants(data.get("variants", {}), graphs)
        unlisted = [g.file for g in graphs.values() if g.file not in artifacts]
        unlisted += [f for v in variants.values() for f in v.values() if f not in artifacts]
        if unlisted:
            raise _Invalid(f"artifacts: no sha256 for {', '.join(unlisted)}")
        for at, value in _named_files(data, ""):
            _relative_path(value, at)
        return cls(data["format"], version, model, tuple(tokens), special, pre, graphs, limits, artifacts, data,
                   variants)

    @classmethod
    def create(cls, *, model: Mapping[str, Any], tokens: Sequence[str], special: Mapping[str, int],
               preprocess: Mapping[str, Any], graphs: Mapping[str, Mapping[str, Any]], limits: Limits, opset: int,
               producer: Mapping[str, str], artifacts: Mapping[str, Mapping[str, Any]],
               verification: Verification) -> "Manifest":
        """A new manifest in the format this version writes (``BUNDLE_FORMAT``, ``BUNDLE_VERSION``), validated.

        ``graphs``: name -> ``{file, inputs, outputs}``; ``artifacts``: file -> ``{sha256, bytes}``.
        """
        return cls._validated({
            "format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "model": model, "vocab": {"tokens": list(tokens)},
            "special_tokens": special, "preprocess": preprocess, "graphs": graphs, "limits": asdict(limits),
            "opset": opset, "producer": producer, "artifacts": artifacts, "verification": verification.to_dict(),
            "engines": [],
        })

    @classmethod
    def _validated(cls, data: Mapping[str, Any]) -> "Manifest":
        # through JSON, as the reader will see it (tuples -> lists), and a copy nothing else holds
        return cls.from_dict(json.loads(json.dumps(data)))

    def _with(self, key: str, value: Any) -> "Manifest":
        return self._validated({**self.raw, key: value})  # a new key goes last, an existing one keeps its place

    def with_source(self, checkpoint: str, meta: Mapping[str, Any]) -> "Manifest":
        """This manifest naming the checkpoint it was exported from and that checkpoint's metadata."""
        return self._with("source", {"checkpoint": checkpoint, "meta": meta})

    def with_artifacts(self, entries: Mapping[str, Mapping[str, Any]]) -> "Manifest":
        """This manifest with more (or replaced) artefacts: file -> ``{sha256, bytes}``."""
        return self._with("artifacts", {**self.raw["artifacts"], **entries})

    def without_artifacts(self, files: Sequence[str]) -> "Manifest":
        """This manifest without the artefact entries of ``files`` (no graph or variant may still name them)."""
        return self._with("artifacts", {f: e for f, e in self.raw["artifacts"].items() if f not in set(files)})

    def with_engines(self, engines: Sequence[Engine]) -> "Manifest":
        """This manifest with ``engines`` as its whole engine list (their files listed with :meth:`with_artifacts`)."""
        return self._with("engines", [e.to_dict() for e in engines])

    def with_variant(self, precision: str, entry: Mapping[str, Any]) -> "Manifest":
        """This manifest with ``precision``'s variant entry (``graphs``, ``plan``, ``verification``) set."""
        return self._with("variants", {**self.raw.get("variants", {}), precision: entry})

    def to_dict(self) -> dict[str, Any]:
        """The manifest as JSON-ready plain data (a copy): what ``manifest.json`` holds."""
        return copy.deepcopy(dict(self.raw))

    @property
    def verification(self) -> Verification | None:
        """What export checked and measured (None in a manifest without the section)."""
        data = self.raw.get("verification")
        return Verification.from_dict(data) if isinstance(data, Mapping) else None

    @property
    def parity(self) -> ParityReport | None:
        """The FP32 graphs' parity against PyTorch measured at export (None: not measured)."""
        verification = self.verification
        return verification.parity if verification is not None else None

    @property
    def variant_reports(self) -> dict[str, dict[str, Any]]:
        """Precision -> the verification report export recorded for that variant (variants with one)."""
        return {p: dict(v["verification"]) for p, v in self.raw.get("variants", {}).items()
                if isinstance(v.get("verification"), Mapping)}

    @property
    def source_checkpoint(self) -> str | None:
        """The checkpoint path export recorded (as written then; it may have moved since)."""
        source = self.raw.get("source")
        checkpoint = source.get("checkpoint") if isinstance(source, Mapping) else None
        return checkpoint if isinstance(checkpoint, str) and checkpoint else None

    @property
    def source_meta(self) -> dict[str, Any]:
        """The source checkpoint's training metadata (epoch, step, val loss, data hash...); ``{}`` if not recorded."""
        source = self.raw.get("source")
        meta = source.get("meta") if isinstance(source, Mapping) else None
        return dict(meta) if isinstance(meta, Mapping) else {}

    def files(self) -> list[str]:
        """Every file name the manifest mentions: graphs, artefacts and any ``file``/``path`` field."""
        names = [g.file for g in self.graphs.values()] + list(self.artifacts)
        names += [f for v in self.variants.values() for f in v.values()]
        names += [v for _, v in _named_files(self.raw, "")]
        return list(dict.fromkeys(names))

    def get(self, key: str, default: Any = None) -> Any:
        """A top-level key of the raw JSON, for sections this version has no accessor for."""
        return self.raw.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def __contains__(self, key: object) -> bool:
        return key in self.raw


def is_bundle(d: Path) -> bool:
    """A directory with a ``manifest.json`` carrying the bundle format tag (not otherwise validated)."""
    try:
        data = json.loads((Path(d) / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == BUNDLE_FORMAT


def inside(root: Path, name: str) -> Path:
    """``root / name``, refused (BundleError) unless it resolves, symlinks included, inside ``root``."""
    base = root.resolve()
    target = (root / name).resolve()
    if target == base or not target.is_relative_to(base):
        raise BundleError(f"{root}: manifest entry {name!r} resolves outside the bundle ({target}); refusing it")
    return target


@dataclass(frozen=True)
class Bundle:
    """A bundle directory and its validated :class:`Manifest` (``bundle.manifest``)."""

    root: Path
    manifest: Manifest

    @classmethod
    def load(cls, root: str | Path, verify: bool = True) -> "Bundle":
        """Read and validate the manifest, check every named file stays inside ``root`` and (``verify``) its sha256."""
        root = Path(root)
        path = root / "manifest.json"
        if not root.is_dir():
            raise BundleError(f"{root}: bundle directory does not exist")
        if not path.is_file():
            raise BundleError(f"{root}: not an export bundle (no manifest.json)")
        inside(root, "manifest.json")  # a symlinked manifest counts too, before anything is read
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise BundleError(f"{path}: corrupt manifest ({type(e).__name__}: {str(e)[:80]})") from None
        try:
            manifest = Manifest.from_dict(data)
        except BundleError as e:
            raise BundleError(f"{path}: {e}") from None
        for name in manifest.files():
            inside(root, name)
        bundle = cls(root, manifest)
        if verify:
            bundle.verify()
        return bundle

    def verify(self, names: list[str] | None = None) -> None:
        """Check sha256 of the named artefacts (default: all listed in the manifest)."""
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
        """Input size, resize rule, mean/std, channel order."""
        return dict(self.manifest.preprocess)

    @property
    def limits(self) -> Limits:
        """What the graphs were exported for: max_batch, max_new_tokens, max_positions."""
        return self.manifest.limits

    @property
    def model(self) -> dict[str, Any]:
        """The model config as a plain dict."""
        return dict(self.manifest.model)

    def find_source_checkpoint(self) -> Path:
        """The checkpoint the bundle was exported from, where it still is (the path recorded, else that path
        relative to the bundle); :class:`BundleError` says why not."""
        src = self.manifest.source_checkpoint
        if not src:
            raise BundleError("the bundle manifest names no source checkpoint")
        for cand in (Path(src), self.root / src):
            if cand.is_file():
                return cand
        raise BundleError(f"the bundle's source checkpoint {src} does not exist here")

    def graph(self, name: str) -> GraphEntry:
        """A graph's manifest entry: file, ordered inputs and outputs (dtype, shape)."""
        if name not in self.manifest.graphs:
            raise BundleError(f"{self.root}: the manifest has no {name!r} graph")
        return self.manifest.graphs[name]

    @property
    def precisions(self) -> tuple[str, ...]:
        """Precisions the bundle holds graphs for: ``fp32`` always, then its variants (``fp16``, ``int8``)."""
        return ("fp32", *self.manifest.variants)

    def variant_graphs(self, precision: str) -> dict[str, str]:
        """Graph name -> file of the graphs a precision variant replaces (``{}`` for fp32).

        A variant lists only the graphs it replaces; the others run in FP32 (e.g. an INT8
        encoder in front of the FP32 decoder). Their inputs and outputs are the FP32 graph's.
        """
        if precision == "fp32":
            return {}
        if precision not in self.manifest.variants:
            raise BundleError(f"{self.root}: the bundle has no {precision} graphs (it holds "
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
