"""The typed, validated manifest: one schema, shared with the writer in ``export``; its checks against itself and its graphs."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from ..engines import Engine, parse_engines
from ..verification import ParityReport, Verification
from .attribute_heads import AttributeHeads
from .canonical_json import sha256_jcs
from .format import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    CONTENT_HASH_ALGORITHM,
    DTYPES,
    HASHED_SECTIONS,
    MAX_BATCH,
    MAX_D_MODEL,
    MAX_DIM,
    MAX_HEADS,
    MAX_IMAGE_SIDE,
    MAX_JSON_DEPTH,
    MAX_LAYERS,
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
from .onnx_io import _SHA256

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
    try:
        text = json.dumps(value) if isinstance(value, (dict, list, str, int, float, bool)) or value is None \
            else repr(value)
    except (ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _section(data: Mapping[str, Any], key: str, where: str = "") -> Mapping[str, Any]:
    name = f"{where}.{key}" if where else key
    if key not in data:
        raise _Invalid(f"{name}: missing")
    return _expect(data[key], dict, name, "an object")


def _bounded_int(data: Mapping[str, Any], key: str, where: str, high: int, low: int = 1) -> int:
    if key not in data:
        raise _Invalid(f"{where}.{key}: missing")
    value = _expect(data[key], int, f"{where}.{key}", "an integer")
    if not low <= value <= high:
        raise _Invalid(f"{where}.{key}: expected {low} to {high}, got {value}")
    return value


def _numbers(data: Mapping[str, Any], key: str, where: str, bounds: tuple[float, float]) -> tuple[float, ...]:
    values = data.get(key)
    ok = isinstance(values, list) and len(values) == 3 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    if not ok:
        raise _Invalid(f"{where}.{key}: expected a list of 3 finite numbers, got {_short(values)}")
    if not all(bounds[0] <= v <= bounds[1] for v in values):
        raise _Invalid(f"{where}.{key}: expected numbers from {bounds[0]:g} to {bounds[1]:g}, got {_short(values)}")
    return tuple(float(v) for v in values)


def _depth_ok(data: Any) -> bool:
    """True when ``data`` nests at most MAX_JSON_DEPTH levels (checked without recursion)."""
    stack = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return False
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return True


def parse_manifest_json(text: bytes) -> Any:
    """Strict JSON of ``manifest.json``: UTF-8, finite numbers only, no duplicate keys, at most MAX_JSON_DEPTH deep.

    ValueError (with the reason) otherwise.
    """
    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    def finite(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):  # 1e400 parses to inf
            raise ValueError(f"{literal[:20]} is out of a double's range")
        return value

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {_short(key)}")
            seen.add(key)
        return dict(pairs)

    data = json.loads(text.decode("utf-8"), parse_constant=no_constants, parse_float=finite,
                      object_pairs_hook=unique)
    if not _depth_ok(data):
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return data


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
        at = f"{where}.{name}"
        _expect(t, dict, at, "an object with dtype and shape")
        dtype = _expect(t.get("dtype"), str, f"{at}.dtype", "a string")
        if dtype not in DTYPES:
            raise _Invalid(f"{at}.dtype: {_short(dtype)} is not one of {', '.join(DTYPES)}")
        shape = _expect(t.get("shape"), list, f"{at}.shape", "a list")
        if len(shape) > MAX_RANK:
            raise _Invalid(f"{at}.shape: more than {MAX_RANK} dimensions")
        for i, d in enumerate(shape):
            _expect(d, (int, str), f"{at}.shape[{i}]", "an integer or a dimension name")
            if isinstance(d, int) and not 1 <= d <= MAX_DIM:
                raise _Invalid(f"{at}.shape[{i}]: expected 1 to {MAX_DIM}, got {d}")
            if isinstance(d, str) and not 0 < len(d) <= 64:
                raise _Invalid(f"{at}.shape[{i}]: a dimension name of 1 to 64 characters, got {_short(d)}")
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


def _content_hash(data: Any) -> dict[str, Any] | None:
    """``content_hash``, shape-checked (None when the manifest has none)."""
    if data is None:
        return None
    _expect(data, dict, "content_hash", "an object")
    if data.get("algorithm") != CONTENT_HASH_ALGORITHM:
        raise _Invalid(f"content_hash.algorithm: {_short(data.get('algorithm'))} is not known to this runtime "
                       f"({CONTENT_HASH_ALGORITHM}); re-export the bundle")
    for key in ("sections", "graphs"):
        for name, digest in _section(data, key, "content_hash").items():
            if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
                raise _Invalid(f"content_hash.{key}.{name}: expected 64 lowercase hex digits, got {_short(digest)}")
    return data


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
class Preprocessing:
    """The manifest's ``preprocess`` section, typed: how an RGB image becomes the encoder's float32 input.

    Resize the whole image (``stretch``, no crop or padding) to ``width`` x ``height`` with ``interpolation``,
    multiply by ``scale``, subtract ``mean`` and divide by ``std`` per channel, in ``channel_order``, laid out
    ``layout``. This runtime implements exactly stretch / bilinear / 1/255 / RGB / NCHW; a manifest asking for
    anything else is refused.
    """

    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str = "RGB"
    resize: str = "stretch"
    interpolation: str = "bilinear"
    scale: float = 1 / 255
    layout: str = "NCHW"

    @classmethod
    def from_dict(cls, data: Any) -> "Preprocessing":
        """Validate a ``preprocess`` section; :class:`BundleError` naming the key."""
        try:
            return cls._parse(data)
        except _Invalid as e:
            raise BundleError(f"invalid manifest: {e}") from None

    @classmethod
    def _parse(cls, data: Any) -> "Preprocessing":
        pre = _expect(data, dict, "preprocess", "an object")
        chosen = {}
        for key in ("channel_order", "resize", "interpolation", "layout"):
            default = getattr(cls, key)
            value = pre.get(key, default)
            if value != default:
                raise _Invalid(f"preprocess.{key}: {_short(value)} is not supported (this runtime implements "
                               f"{default})")
            chosen[key] = value
        scale = pre.get("scale", cls.scale)
        if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isclose(scale, cls.scale,
                                                                                               rel_tol=1e-9):
            raise _Invalid(f"preprocess.scale: {_short(scale)} is not supported (this runtime implements 1/255)")
        return cls(_bounded_int(pre, "height", "preprocess", MAX_IMAGE_SIDE),
                   _bounded_int(pre, "width", "preprocess", MAX_IMAGE_SIDE),
                   _numbers(pre, "mean", "preprocess", MEAN_RANGE),  # type: ignore[arg-type]
                   _numbers(pre, "std", "preprocess", STD_RANGE),  # type: ignore[arg-type]
                   scale=float(scale), **chosen)


@dataclass(frozen=True)
class ModelConfig:
    """The manifest's ``model`` section, typed: the sizes a runtime allocates from (the whole config stays
    readable as ``Manifest.model``); ``backbone``, ``visual_tokens`` and ``image_size`` are informative."""

    n_layers: int
    n_heads: int
    d_model: int
    vocab_size: int
    max_len: int
    backbone: str | None = None
    visual_tokens: str | None = None
    image_size: tuple[int, int] | None = None

    @property
    def head_dim(self) -> int:
        """Per-head width, ``d_model // n_heads``."""
        return self.d_model // self.n_heads

    def summary(self, keys: tuple[str, ...]) -> dict[str, Any]:
        """``keys`` of this config as plain JSON values (``image_size`` a list), for reports."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in ((k, getattr(self, k)) for k in keys)}

    @classmethod
    def from_dict(cls, data: Any) -> "ModelConfig":
        """Validate a ``model`` section; :class:`BundleError` naming the key."""
        try:
            return cls._parse(data)
        except _Invalid as e:
            raise BundleError(f"invalid manifest: {e}") from None

    @classmethod
    def _parse(cls, data: Any) -> "ModelConfig":
        m = _expect(data, dict, "model", "an object")
        sizes = {key: _bounded_int(m, key, "model", high) for key, high in (
            ("n_layers", MAX_LAYERS), ("n_heads", MAX_HEADS), ("d_model", MAX_D_MODEL), ("vocab_size", MAX_VOCAB),
            ("max_len", MAX_POSITIONS))}
        if sizes["d_model"] % sizes["n_heads"]:
            raise _Invalid(f"model.d_model: {sizes['d_model']} is not divisible by n_heads {sizes['n_heads']}")
        info: dict[str, Any] = {}
        for key in ("backbone", "visual_tokens"):
            if m.get(key) is not None:
                info[key] = _expect(m[key], str, f"model.{key}", "a string")
        if m.get("image_size") is not None:
            size = m["image_size"]
            if not (isinstance(size, list) and len(size) == 2 and all(
                    isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_IMAGE_SIDE for v in size)):
                raise _Invalid(f"model.image_size: expected [height, width] from 1 to {MAX_IMAGE_SIDE}, "
                               f"got {_short(size)}")
            info["image_size"] = (size[0], size[1])
        return cls(**sizes, **info)


# -- the graph contract: what the runtime feeds each graph and reads back -------------------------------------
# A shape template: "B" and "S" stand for any dimension name (batch, cache), digits for themselves, and the
# other symbols for sizes the rest of the manifest fixes (see _SOURCES).

_KV = ("float32", "L B H N Dh")
_STEP_IN = {"tokens": ("int64", "B 1"), "positions": ("int64", "B 1")}
_STEP_OUT = {"logits": ("float32", "B V"), "next_ids": ("int64", "B")}
_CONTRACT: dict[str, tuple[dict[str, tuple[str, str]], dict[str, tuple[str, str]]]] = {
    "encoder": ({"pixels": ("float32", "B 3 HT WD")}, {"cross_k": _KV, "cross_v": _KV}),
    "decoder": ({**_STEP_IN, "cross_k": _KV, "cross_v": _KV, "cache_k": ("float32", "L B H S Dh"),
                 "cache_v": ("float32", "L B H S Dh")},
                {**_STEP_OUT, "new_k": ("float32", "L B H 1 Dh"), "new_v": ("float32", "L B H 1 Dh")}),
}
_CROSS_FORMS = {  # decoder_ort's per-layer cross-attention inputs (cross_ort's outputs), by form
    "tables": {"cross_qk": ("float32", "B HN D"), "cross_qkb": ("float32", "B 1 HN"),
               "cross_ov": ("float32", "B HN D")},
    "attention": {"cross_k": ("float32", "B H N Dh"), "cross_v": ("float32", "B H N Dh")},
}
_SOURCES = {"L": "model.n_layers", "H": "model.n_heads", "D": "model.d_model", "Dh": "model.d_model / n_heads",
            "V": "the vocabulary size (vocab.tokens)", "HT": "preprocess.height", "WD": "preprocess.width",
            "N": "the encoder's visual tokens (graphs.encoder.outputs.cross_k.shape[3])",
            "HN": "n_heads x the encoder's visual tokens",
            "A": "the attribute heads' values (graphs.encoder.attribute_heads.fields)"}


def _ort_contract(layers: int, form: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """cross_ort's outputs and decoder_ort's inputs and outputs for ``layers`` layers of a cross form."""
    cache = ("float32", "B H S Dh")
    cross = {f"{kind}_{i}": spec for i in range(layers) for kind, spec in _CROSS_FORMS[form].items()}
    inputs = {**_STEP_IN, **cross, "cache_indirection": ("int32", "B 1 S"),
              **{f"past_{kv}_{i}": cache for i in range(layers) for kv in "kv"}}
    outputs = {**_STEP_OUT, **{f"present_{kv}_{i}": cache for i in range(layers) for kv in "kv"}}
    return cross, inputs, outputs


def _names(tensors: Mapping[str, Any], expected: Mapping[str, Any], at: str) -> None:
    missing = [n for n in expected if n not in tensors]
    extra = [n for n in tensors if n not in expected]
    if missing or extra:
        parts = [f"missing {', '.join(missing[:3])}{'...' if len(missing) > 3 else ''}"] if missing else []
        parts += [f"unexpected {', '.join(map(_short, extra[:3]))}{'...' if len(extra) > 3 else ''}"] if extra else []
        raise _Invalid(f"{at}: {'; '.join(parts)}")


def _match(t: TensorEntry, spec: tuple[str, str], env: Mapping[str, int], at: str) -> None:
    dtype, template = spec
    dims = template.split()
    if t.dtype != dtype:
        raise _Invalid(f"{at}.dtype: expected {dtype}, got {t.dtype}")
    if len(t.shape) != len(dims):
        raise _Invalid(f"{at}.shape: expected {len(dims)} dimensions, got {_short(list(t.shape))}")
    for i, (d, sym) in enumerate(zip(t.shape, dims)):
        if sym in ("B", "S"):
            if not isinstance(d, str):
                raise _Invalid(f"{at}.shape[{i}]: expected a dimension name (dynamic), got {d}")
        elif sym.isdigit():
            if d != int(sym):
                raise _Invalid(f"{at}.shape[{i}]: expected {sym}, got {_short(d)}")
        elif d != env[sym]:
            raise _Invalid(f"{at}.shape[{i}] is {_short(d)}, but {_SOURCES[sym]} is {env[sym]}")


def _check_side(graph: GraphEntry, side: str, specs: Mapping[str, tuple[str, str]], env: Mapping[str, int],
                name: str) -> None:
    tensors = graph.inputs if side == "inputs" else graph.outputs
    _names(tensors, specs, f"graphs.{name}.{side}")
    for tensor, spec in specs.items():
        _match(tensors[tensor], spec, env, f"graphs.{name}.{side}.{tensor}")


# -- the manifest --------------------------------------------------------------------------------------------

def _format_version(data: Mapping[str, Any]) -> int:
    """The manifest's format version, after checking that it is a PersonVLM bundle manifest."""
    if data.get("format") != BUNDLE_FORMAT:
        raise _Invalid(f"format: not a PersonVLM bundle manifest (format {_short(data.get('format'))})")
    version = data.get("version")
    if isinstance(version, bool) or version not in SUPPORTED_VERSIONS:
        raise _Invalid(f"version: bundle format version {_short(version)} is not supported (this runtime reads "
                       f"{', '.join(map(str, SUPPORTED_VERSIONS))}); re-export it")
    return version


def _vocab_tokens(data: Mapping[str, Any]) -> tuple[str, ...]:
    """``vocab.tokens``: distinct, bounded strings that start with the special tokens."""
    tokens = _expect(_section(data, "vocab").get("tokens"), list, "vocab.tokens", "a list of strings")
    if not tokens or not all(isinstance(t, str) for t in tokens):
        raise _Invalid("vocab.tokens: expected a non-empty list of strings")
    if len(tokens) > MAX_VOCAB:
        raise _Invalid(f"vocab.tokens: {len(tokens)} tokens, more than {MAX_VOCAB}")
    if tuple(tokens[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
        raise _Invalid(f"vocab.tokens: must start with {', '.join(SPECIAL_TOKENS)}, got {_short(tokens[:4])}")
    for i, t in enumerate(tokens):
        if not 0 < len(t) <= MAX_TOKEN_CHARS:
            raise _Invalid(f"vocab.tokens[{i}]: expected 1 to {MAX_TOKEN_CHARS} characters, got {_short(t)}")
    if len(set(tokens)) != len(tokens):
        raise _Invalid("vocab.tokens: a token appears twice")
    return tuple(tokens)


def _special_tokens(data: Mapping[str, Any]) -> dict[str, int]:
    """``special_tokens``: exactly pad, bos, eos and unk, at their fixed ids."""
    special = dict(_section(data, "special_tokens"))
    for i, token in enumerate(SPECIAL_TOKENS):
        name = token.strip("<>")
        if name not in special:
            raise _Invalid(f"special_tokens.{name}: missing")
        _expect(special[name], int, f"special_tokens.{name}", "a token id")
        if special[name] != i:
            raise _Invalid(f"special_tokens.{name}: expected {i} (the id of {token}), got {special[name]}")
    extra = [k for k in special if k not in {t.strip("<>") for t in SPECIAL_TOKENS}]
    if extra:
        raise _Invalid(f"special_tokens.{extra[0]}: not a special token (pad, bos, eos, unk)")
    return special


def _graphs(data: Mapping[str, Any]) -> dict[str, GraphEntry]:
    """``graphs``: each graph's file and tensors, the required ones present, the encoder's heads checked."""
    graphs = {}
    for name, g in _section(data, "graphs").items():
        at = f"graphs.{name}"
        _expect(g, dict, at, "an object with file, inputs and outputs")
        graphs[name] = GraphEntry(_relative_path(g.get("file"), f"{at}.file"),
                                  _tensors(g.get("inputs"), f"{at}.inputs"), _tensors(g.get("outputs"), f"{at}.outputs"))
    for name in _REQUIRED_GRAPHS:
        if name not in graphs:
            raise _Invalid(f"graphs.{name}: missing")
    if "attribute_heads" in data["graphs"]["encoder"]:
        AttributeHeads.from_dict(data["graphs"]["encoder"]["attribute_heads"])  # BundleError naming the key
    return graphs


def _limits(data: Mapping[str, Any]) -> Limits:
    """``limits``: bounded ints, no more new tokens than positions."""
    lim = _section(data, "limits")
    limits = Limits(*(_bounded_int(lim, k, "limits", high) for k, high in (
        ("max_batch", MAX_BATCH), ("max_new_tokens", MAX_POSITIONS), ("max_positions", MAX_POSITIONS))))
    if limits.max_new_tokens > limits.max_positions:
        raise _Invalid(f"limits.max_new_tokens: {limits.max_new_tokens} exceeds max_positions {limits.max_positions}")
    return limits


def _artifacts(data: Mapping[str, Any]) -> dict[str, str]:
    """``artifacts``: relative file -> lowercase hex sha256."""
    artifacts = {}
    for file, entry in _section(data, "artifacts").items():
        _relative_path(file, f"artifacts[{_short(file)}]")
        _expect(entry, dict, f"artifacts.{file}", "an object with sha256")
        sha = _expect(entry.get("sha256"), str, f"artifacts.{file}.sha256", "a hex sha256")
        if not _SHA256.fullmatch(sha):
            raise _Invalid(f"artifacts.{file}.sha256: expected 64 lowercase hex digits, got {_short(sha)}")
        artifacts[file] = sha
    return artifacts


def _engines(data: Mapping[str, Any]) -> None:
    """``engines``: a list of objects that ``parse_engines`` reads."""
    engines = _expect(data.get("engines", []), list, "engines", "a list")
    for i, entry in enumerate(engines):
        _expect(entry, dict, f"engines[{i}]", "an object")
    try:
        parse_engines(engines)
    except (TypeError, ValueError) as e:
        raise _Invalid(f"engines: {e}") from None


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``, validated: the one schema export writes and the runtime reads (``docs/bundle.md``).

    Export builds it with :meth:`create` and the ``with_*`` methods (each returns a new, validated manifest
    carrying a fresh ``content_hash``) and writes :meth:`to_dict`; readers use the typed fields and properties
    (``preprocessing``, ``model_config``, ``verification``, ``parity``, ``source_checkpoint``...). Keys this
    version does not know stay readable through :meth:`get` / ``[]`` on the raw JSON; every ``file``/``path``
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
        """Validate the manifest's shape and bounds; :class:`BundleError` with one line naming what is wrong.

        How the sections agree with each other is :meth:`check_consistency`'s (``Bundle.load`` runs both).
        """
        try:
            return cls._parse(data)
        except _Invalid as e:
            raise BundleError(f"invalid manifest: {e}") from None

    @classmethod
    def _parse(cls, data: Any) -> "Manifest":
        _expect(data, dict, "manifest", "a JSON object")
        version = _format_version(data)
        model = _section(data, "model")
        ModelConfig._parse(model)
        tokens = _vocab_tokens(data)
        special = _special_tokens(data)
        pre = _section(data, "preprocess")
        Preprocessing._parse(pre)
        graphs = _graphs(data)
        limits = _limits(data)
        artifacts = _artifacts(data)
        variants = _variants(data.get("variants", {}), graphs)
        unlisted = [g.file for g in graphs.values() if g.file not in artifacts]
        unlisted += [f for v in variants.values() for f in v.values() if f not in artifacts]
        if unlisted:
            raise _Invalid(f"artifacts: no sha256 for {', '.join(unlisted)}")
        for at, value in _named_files(data, ""):
            _relative_path(value, at)
        _engines(data)
        _content_hash(data.get("content_hash"))
        return cls(data["format"], version, model, tokens, special, pre, graphs, limits, artifacts, data, variants)

    def check_consistency(self) -> None:
        """:class:`BundleError` (one line) unless the sections agree: the vocabulary with ``model.vocab_size``
        and the logits, ``preprocess`` with the encoder's pixels input and ``model.image_size``, the model's
        layers, heads and width with every cache and cross-attention tensor, the limits with ``model.max_len``
        (the graph contract of ``docs/bundle.md``)."""
        try:
            self._consistent()
        except _Invalid as e:
            raise BundleError(f"invalid manifest: {e}") from None

    def _consistent(self) -> None:
        m, pre = self.model_config, self.preprocessing
        if m.vocab_size != len(self.tokens):
            raise _Invalid(f"model.vocab_size is {m.vocab_size}, but vocab.tokens has {len(self.tokens)} tokens")
        if m.image_size is not None and m.image_size != (pre.height, pre.width):
            raise _Invalid(f"model.image_size is {list(m.image_size)}, but preprocess is {pre.height}x{pre.width}")
        for key in ("mean", "std"):
            if key in self.model and self.model[key] != self.preprocess[key]:
                raise _Invalid(f"model.{key} is {_short(self.model[key])}, but preprocess.{key} is "
                               f"{_short(self.preprocess[key])}")
        if self.limits.max_positions > m.max_len:
            raise _Invalid(f"limits.max_positions is {self.limits.max_positions}, but model.max_len is {m.max_len}")
        cross_k = self.graphs["encoder"].outputs.get("cross_k")
        visual = cross_k.shape[3] if cross_k is not None and len(cross_k.shape) == 5 else None
        if not isinstance(visual, int) or not 1 <= visual <= MAX_VISUAL_TOKENS:
            raise _Invalid(f"graphs.encoder.outputs.cross_k: expected shape [{m.n_layers}, batch, {m.n_heads}, "
                           f"visual tokens (1 to {MAX_VISUAL_TOKENS}), {m.head_dim}]")
        env = {"L": m.n_layers, "H": m.n_heads, "D": m.d_model, "Dh": m.head_dim, "V": len(self.tokens),
               "HT": pre.height, "WD": pre.width, "N": visual, "HN": m.n_heads * visual}
        heads = self.attribute_heads
        expected_encoder = ["cross_k", "cross_v"]
        for name, (inputs, outputs) in _CONTRACT.items():
            if name == "encoder" and heads is not None:  # the optional third output: every head's softmax
                outputs = {**outputs, heads.output: ("float32", "B A")}
                env = {**env, "A": heads.total_values}
                expected_encoder.append(heads.output)
            _check_side(self.graphs[name], "inputs", inputs, env, name)
            _check_side(self.graphs[name], "outputs", outputs, env, name)
        if list(self.graphs["encoder"].outputs) != expected_encoder:
            raise _Invalid(f"graphs.encoder.outputs: expected {' then '.join(expected_encoder)}")
        if "cross_ort" in self.graphs and "decoder_ort" in self.graphs:  # one without the other is never run
            form = "tables" if "cross_qk_0" in self.graphs["decoder_ort"].inputs else "attention"
            cross, inputs, outputs = _ort_contract(m.n_layers, form)
            _check_side(self.graphs["cross_ort"], "inputs", {"cross_k": _KV, "cross_v": _KV}, env, "cross_ort")
            _check_side(self.graphs["cross_ort"], "outputs", cross, env, "cross_ort")
            _check_side(self.graphs["decoder_ort"], "inputs", inputs, env, "decoder_ort")
            _check_side(self.graphs["decoder_ort"], "outputs", outputs, env, "decoder_ort")

    @property
    def attribute_heads(self) -> AttributeHeads | None:
        """The encoder's attribute-head output (fields, offsets, temperatures); None in a bundle without heads."""
        data = self.raw["graphs"]["encoder"].get("attribute_heads")
        return None if data is None else AttributeHeads.from_dict(data)

    def with_attribute_heads(self, heads: AttributeHeads) -> "Manifest":
        """This manifest with the encoder's ``attribute_heads`` section replaced (calibrated temperatures)."""
        graphs = copy.deepcopy(dict(self.raw["graphs"]))
        graphs["encoder"]["attribute_heads"] = heads.to_dict()
        return self._with("graphs", graphs)

    @property
    def preprocessing(self) -> Preprocessing:
        """The ``preprocess`` section, typed."""
        return Preprocessing._parse(self.preprocess)

    @property
    def model_config(self) -> ModelConfig:
        """The ``model`` section's sizes, typed."""
        return ModelConfig._parse(self.model)

    @property
    def content_hash(self) -> dict[str, Any] | None:
        """The recorded ``content_hash`` (``algorithm``, ``sections``, ``graphs``), None in an older manifest."""
        recorded = self.raw.get("content_hash")
        return copy.deepcopy(recorded) if isinstance(recorded, dict) else None

    def compute_content_hash(self) -> dict[str, Any]:
        """The ``content_hash`` of this manifest's contents, as export records it (see ``docs/bundle.md``).

        ``sections``: sha256 of the canonical JSON (:func:`canonical_json`) of each of
        :data:`HASHED_SECTIONS`; ``graphs``: per graph, sha256 of the canonical JSON of its ``graphs`` entry
        with ``sha256`` (its file's, from ``artifacts``) added.
        """
        at = ""
        try:
            sections = {}
            for at in HASHED_SECTIONS:
                sections[at] = sha256_jcs(self.raw[at])
            graphs = {}
            for name, g in self.graphs.items():
                at = f"graphs.{name}"
                graphs[name] = sha256_jcs({**self.raw["graphs"][name], "sha256": self.artifacts[g.file]})
        except ValueError as e:
            raise BundleError(f"invalid manifest: {at}: cannot be hashed ({e})") from None
        return {"algorithm": CONTENT_HASH_ALGORITHM, "sections": sections, "graphs": graphs}

    def check_content_hash(self) -> None:
        """:class:`BundleError` naming each section or graph whose contents differ from the recorded
        ``content_hash``, or saying that the manifest has none (exported before content hashes: re-export)."""
        recorded = self.content_hash
        if recorded is None:
            raise BundleError("the manifest has no content_hash (exported before manifests were bound to their "
                              "graphs); re-export the bundle with pvlm-export onnx, or load it with verify=False "
                              "to trust it as it is")
        expected = self.compute_content_hash()
        changed = [k for k in HASHED_SECTIONS if recorded["sections"].get(k) != expected["sections"][k]]
        changed += [f"graphs.{n}" for n in self.graphs if recorded["graphs"].get(n) != expected["graphs"][n]]
        if changed:
            raise BundleError(f"content hash mismatch in {', '.join(changed)}: the manifest was changed after "
                              "export; re-export the bundle")

    def sealed(self) -> "Manifest":
        """This manifest with ``content_hash`` recomputed from its contents (what export writes)."""
        return Manifest.from_dict({**self.raw, "content_hash": self.compute_content_hash()})

    @classmethod
    def create(cls, *, model: Mapping[str, Any], tokens: Sequence[str], special: Mapping[str, int],
               preprocess: Mapping[str, Any], graphs: Mapping[str, Mapping[str, Any]], limits: Limits, opset: int,
               producer: Mapping[str, str], artifacts: Mapping[str, Mapping[str, Any]],
               verification: Verification) -> "Manifest":
        """A new manifest in the format this version writes (``BUNDLE_FORMAT``, ``BUNDLE_VERSION``), validated,
        consistent and sealed with its ``content_hash``.

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
        manifest = cls.from_dict(json.loads(json.dumps(data)))
        manifest.check_consistency()
        return manifest.sealed()

    def _with(self, key: str, value: Any) -> "Manifest":
        return self._validated({**self.raw, key: value})  # a new key goes last, an existing one keeps its place

    def with_source(self, checkpoint: str, meta: Mapping[str, Any], absolute: str | None = None) -> "Manifest":
        """This manifest naming the checkpoint it was exported from (relative to the bundle, with its absolute
        path at export as a hint) and that checkpoint's metadata."""
        source = {"checkpoint": checkpoint, "meta": meta}
        return self._with("source", {**source, "checkpoint_absolute": absolute} if absolute else source)

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
        """The checkpoint path export recorded, relative to the bundle (older bundles: as given to export)."""
        return self._source_field("checkpoint")

    @property
    def source_checkpoint_absolute(self) -> str | None:
        """The checkpoint's absolute path at export: a hint for when the bundle moved without it."""
        return self._source_field("checkpoint_absolute")

    def _source_field(self, key: str) -> str | None:
        source = self.raw.get("source")
        value = source.get(key) if isinstance(source, Mapping) else None
        return value if isinstance(value, str) and value else None

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
