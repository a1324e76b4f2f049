"""``Describer``: preprocessing, the numpy greedy loop over a backend (beam search and sampling in
``beam.py``/``sampling.py``), detokenising, attributes."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .attribute_confidence import CombineRule, combine, head_distributions
from .attributes import parse_attributes
from .backends import Backend, create_backend
from .backends.base import require_logits
from .beam import beam_search
from .bundle import Bundle
from .decoding import DecodingOptions, Hypothesis, banned_tokens, drop_finished
from .preprocess import DEFAULT_MAX_PIXELS, ImageInput, InputError, clip_box, describe_input, preprocess, to_rgb
from .sampling import sample_decode

log = logging.getLogger(__name__)

_NO_SPACE_BEFORE = set(",.;:!?)'")


@dataclass(frozen=True)
class Alternative:
    """One returned sequence: text, ids, score (length-normalised log-prob; None for greedy), attributes (parsed
    from the text, combined with the attribute heads' probabilities where the bundle has heads)."""

    text: str
    tokens: list[int]
    score: float | None
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Description:
    """One input's result. ``error`` is set (and text empty) when the input was unusable.

    ``text``/``tokens``/``attributes`` are the best sequence; ``alternatives`` holds every returned
    sequence (``DecodingOptions.n_best`` of them), best first, the best included. With a bundle whose encoder
    has attribute heads, ``attributes`` also carries their calibrated probabilities, the text's own values and
    where the two disagree (``runtime.attribute_confidence``).
    """

    text: str
    tokens: list[int]
    attributes: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)  # ms, of the batch this input ran in
    error: str | None = None
    alternatives: list[Alternative] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the input was described."""
        return self.error is None


def detokenize(ids: Sequence[int], itos: Sequence[str], n_special: int = 4) -> str:
    """Token ids (no specials expected) -> text with punctuation re-attached."""
    out: list[str] = []
    for i in ids:
        if i < n_special:
            continue
        tok = itos[i] if 0 <= i < len(itos) else "<unk>"
        if out and tok in _NO_SPACE_BEFORE:
            out[-1] += tok
        else:
            out.append(tok)
    return " ".join(out)


def greedy_decode(backend: Any, pixels: np.ndarray, bos: int, eos: int, max_new_tokens: int,
                  stop_at_eos: bool = True, no_repeat_ngram_size: int = 0) -> tuple[list[list[int]], dict[str, float]]:
    """Encoder once, then one decoder step per token; finished rows leave the active batch.

    Returns per-row token ids (without BOS/EOS) and timings in ms. ``stop_at_eos=False``
    decodes exactly ``max_new_tokens`` for every row (fixed work for benchmarks).
    ``no_repeat_ngram_size`` > 0: a row whose next id would repeat an n-gram of its text ends there
    (the backends give only ids, so the guard stops a row rather than picking the runner-up).
    """
    b = pixels.shape[0]
    t0 = time.perf_counter()
    state = backend.encode(pixels, max_new_tokens)
    t1 = time.perf_counter()
    rows = np.arange(b)  # original row index of each active row
    tokens = np.full((b, 1), bos, np.int64)
    out: list[list[int]] = [[] for _ in range(b)]
    steps = 0
    for pos in range(max_new_tokens):
        ids = backend.step(state, tokens, pos)
        steps += 1
        finished = ids == eos if stop_at_eos else np.zeros(len(ids), bool)
        if no_repeat_ngram_size:
            finished |= [i in banned_tokens(out[r], no_repeat_ngram_size) for r, i in zip(rows, ids.tolist())]
        for r, i, f in zip(rows, ids.tolist(), finished):
            if not f:
                out[r].append(i)
        if finished.all():
            break
        rows, ids = drop_finished(backend, state, finished, rows, ids)
        tokens = ids.astype(np.int64).reshape(-1, 1)
    t2 = time.perf_counter()
    return out, {"encode_ms": (t1 - t0) * 1e3, "decode_ms": (t2 - t1) * 1e3, "steps": steps}


def _check_channel_order(channel_order: str | None) -> None:
    if channel_order not in (None, "rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")


def _count(boxes: Any) -> int:
    try:
        return len(boxes)
    except TypeError:
        return 0


class _EncoderTap:
    """A backend as the decoding loops see it, keeping the attribute-head probabilities of the batch it encodes
    (one per call to ``Describer._run``: per-call state, so the Describer stays thread-safe)."""

    def __init__(self, backend: Backend):
        self._backend = backend
        self.attributes: np.ndarray | None = None

    def encode(self, pixels: np.ndarray, capacity: int) -> Any:
        state = self._backend.encode(pixels, capacity)
        self.attributes = getattr(state, "attributes", None)
        return state

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


class Describer:
    """Describe person crops with an exported bundle. Thread-safe: per-call state only.

    ``bundle_dir``: the bundle's directory, or a loaded :class:`Bundle` (``verify`` is then not applied again).
    ``backend``: ``auto`` (tensorrt when the bundle has engines for this GPU and TensorRT, onnxruntime-cuda
    when onnxruntime-gpu sees a GPU, coreml on Apple silicon with the bundle's packages, else onnxruntime-cpu),
    a name, or a ready backend for this bundle (the Triton describer passes its BLS backend); the options that
    build a backend (``threads``, ``providers``, ``decoder``, ``shared_threads``) are then refused.
    ``decoder`` (ONNX Runtime backends): ``auto`` runs the bundle's ``cross_ort`` + ``decoder_ort``
    graphs with the cache bound in place when it has them; ``portable`` forces ``decoder.onnx``. ``shared_threads``:
    ONNX Runtime's process-wide thread pool for both graphs (faster; process-wide, see ``SessionLoader``).
    ``precision``: ``fp32`` (default), or a variant the bundle holds (``fp16``, ``int8``; see
    ``Bundle.precisions``). FP16 on ONNX Runtime CPU is a correctness check, not a speed-up.
    ``on_error``: ``"skip"`` gives a failed input a Description with ``error`` set; ``"raise"``
    raises :class:`InputError` naming the input. ``max_pixels``: files and PIL images with more pixels are
    refused before decoding (the decompression-bomb limit, 64 Mpx by default).

    ``channel_order`` (``"rgb"`` or ``"bgr"``) says how numpy arrays hold their colour channels; OpenCV's
    frames are BGR. An array has no way to say it itself, so it is never assumed: ``describe``,
    ``describe_crops`` and ``preprocess`` raise ``TypeError`` for an array unless the call or the
    Describer states it (the call's wins). Paths, encoded bytes and PIL images need none.

    ``decoding``: a :class:`~runtime.decoding.DecodingOptions` (greedy by default, with the repetition guard;
    beam search and sampling need an ONNX Runtime backend); each call may pass its own. ``min_crop``: boxes
    of ``describe_crops`` narrower or shorter than this (pixels, ``(height, width)`` or one int for both) get an
    error Description; default 1/8 of the model's input height and width; ``0`` turns it off.

    ``min_confidence`` (0 to 1, default 0: never): with a bundle whose encoder has attribute heads, an attribute
    whose stated value has a calibrated probability below it is reported as unknown (None, or ``[]``) and listed
    under ``attributes["abstained"]``; a bundle without heads refuses a value above 0 (ValueError).
    ``attribute_rule``: how the text's values and the heads' combine (``runtime.attribute_confidence``).

    ``close()`` (or ``with Describer(...) as d:``) closes the backend, ready ones included. Closing while other
    threads describe is safe: each of them gets its results or :class:`~runtime.backends.BackendClosed`.
    """

    def __init__(self, bundle_dir: str | Path | Bundle, backend: str | Backend = "auto", *, threads: int | None = None,
                 max_batch: int | None = None, max_new_tokens: int | None = None, channel_order: str | None = None,
                 on_error: str = "skip", verify: bool = True, providers: list[Any] | None = None,
                 decoder: str = "auto", shared_threads: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
                 precision: str = "fp32", decoding: DecodingOptions | None = None,
                 min_crop: int | tuple[int, int] | None = None, min_confidence: float = 0.0,
                 attribute_rule: CombineRule | None = None):
        _check_channel_order(channel_order)
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.bundle = bundle_dir if isinstance(bundle_dir, Bundle) else Bundle.load(bundle_dir, verify=verify)
        limits = self.bundle.limits
        self.max_batch = int(limits.max_batch if max_batch is None else max_batch)
        self.max_new_tokens = int(limits.max_new_tokens if max_new_tokens is None else max_new_tokens)
        if not 1 <= self.max_batch <= limits.max_batch:
            raise ValueError(f"max_batch must be in [1, {limits.max_batch}] (the bundle's limit), got {self.max_batch}")
        if not 1 <= self.max_new_tokens <= limits.max_positions:
            raise ValueError(f"max_new_tokens must be in [1, {limits.max_positions}], got {self.max_new_tokens}")
        if max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
        self.channel_order, self.on_error, self.max_pixels = channel_order, on_error, max_pixels
        if not isinstance(backend, str):
            given = {"threads": threads, "providers": providers, "decoder": decoder != "auto",
                     "shared_threads": shared_threads}
            refused = [k for k, v in given.items() if v]
            if refused:
                raise ValueError(f"{', '.join(refused)}: options for building a backend, but a ready "
                                 f"{getattr(backend, 'name', type(backend).__name__)} backend was given")
            self.precision = getattr(backend, "precision", precision)
            self.backend = backend
        else:
            self.precision = precision
            self.backend = self._create_backend(backend, threads, providers, decoder, shared_threads, precision)
        pre = self.bundle.preprocessing
        self._pre = (pre.height, pre.width, list(pre.mean), list(pre.std))
        sp = self.bundle.special
        self._bos, self._eos = sp["bos"], sp["eos"]
        self._itos = self.bundle.tokens
        self.decoding = self._check_decoding(decoding or DecodingOptions())
        self.min_crop = self._min_crop(min_crop)
        self.attribute_heads = self.bundle.manifest.attribute_heads
        self.attribute_rule = self._attribute_rule(attribute_rule, min_confidence)

    def _attribute_rule(self, rule: CombineRule | None, min_confidence: float) -> CombineRule:
        """The combination rule with ``min_confidence``; refused above 0 when the bundle has no heads."""
        rule = replace(rule or CombineRule(), min_confidence=min_confidence)
        if rule.min_confidence > 0 and self.attribute_heads is None:
            raise ValueError(f"min_confidence needs a bundle whose encoder has attribute heads; {self.bundle.root} "
                             "has none (export a checkpoint trained with attribute heads)")
        return rule

    def _min_crop(self, min_crop: int | tuple[int, int] | None) -> tuple[int, int]:
        """(height, width) in pixels below which a box is refused."""
        h, w = self._pre[0], self._pre[1]
        mc = (max(1, h // 8), max(1, w // 8)) if min_crop is None else \
            (min_crop, min_crop) if isinstance(min_crop, int) else tuple(min_crop)
        if len(mc) != 2 or not all(isinstance(v, int) and v >= 0 for v in mc):
            raise ValueError(f"min_crop must be an int >= 0 or (height, width) of them, got {min_crop!r}")
        return mc[0], mc[1]

    def _check_decoding(self, decoding: Any) -> DecodingOptions:
        """``decoding`` if it is DecodingOptions this backend can run; else one clear error."""
        if not isinstance(decoding, DecodingOptions):
            raise TypeError(f"decoding must be runtime.DecodingOptions, got {type(decoding).__name__}")
        if decoding.mode != "greedy":
            require_logits(self.backend, "beam search" if decoding.mode == "beam" else "sampling")
        return decoding

    def _create_backend(self, name: str, threads: int | None, providers: list[Any] | None, decoder: str,
                        shared_threads: bool, precision: str) -> Backend:
        options: dict[str, Any] = {"threads": threads}
        if providers is not None:
            options["providers"] = providers
        if decoder != "auto":
            options["decoder"] = decoder
        if shared_threads:
            options["shared_threads"] = True
        if precision != "fp32":
            options["precision"] = precision
        return create_backend(name, self.bundle, **options)

    def close(self) -> None:
        """Close the backend (sessions, engines, device memory); later calls raise ``BackendClosed``."""
        self.backend.close()

    def __enter__(self) -> Describer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def backend_name(self) -> str:
        """Name of the backend in use."""
        return self.backend.name

    def preprocess(self, image: ImageInput, index: int = 0, *, channel_order: str | None = None) -> np.ndarray:
        """One input -> float32 (3, H, W); an array needs ``channel_order`` (here or on the Describer)."""
        order = self._channel_order([image], channel_order, "preprocess")
        return preprocess(to_rgb(image, index, order, self.max_pixels), *self._pre)

    def describe(self, inputs: ImageInput | Sequence[ImageInput], *, channel_order: str | None = None,
                 max_new_tokens: int | None = None, on_error: str | None = None,
                 decoding: DecodingOptions | None = None, first_index: int = 0,
                 warn: bool = True) -> list[Description]:
        """One Description per input, in input order; batches of up to ``max_batch``.

        Inputs: paths, encoded bytes, PIL images, uint8 arrays (HxW, HxWx3, HxWx4). Arrays need
        ``channel_order="rgb"`` or ``"bgr"`` (OpenCV) here or on the Describer, else ``TypeError``.
        ``first_index``: the index of ``inputs[0]`` in the caller's stream (errors name "input N" by it);
        ``warn=False``: skipped inputs are not logged, for callers that report each ``Description.error``.
        """
        if isinstance(inputs, (str, Path, np.ndarray, bytes, bytearray)) or not isinstance(inputs, Sequence):
            inputs = [inputs]
        order = self._channel_order(inputs, channel_order, "describe")
        return self._run([(lambda x=x, i=i: preprocess(to_rgb(x, i, order, self.max_pixels), *self._pre))
                          for i, x in enumerate(inputs, first_index)], max_new_tokens, on_error, decoding=decoding,
                         warn=warn, first_index=first_index)

    def describe_crops(self, frame: ImageInput, boxes: Sequence[Sequence[float]], *, channel_order: str | None = None,
                       max_new_tokens: int | None = None, on_error: str | None = None,
                       decoding: DecodingOptions | None = None) -> list[Description]:
        """Describe boxes (x1, y1, x2, y2; clipped to the frame) cut out of one full frame.

        A numpy frame needs ``channel_order``: ``"bgr"`` for OpenCV's ``cv2.imread``/``VideoCapture`` frames,
        ``"rgb"`` otherwise (here or on the Describer; ``TypeError`` without it). A box that is not four
        finite numbers, has no area in the frame, or is smaller than ``min_crop`` (clipped), gets its own
        error Description; an unusable frame
        fails every box (each Description names it; raises with ``on_error="raise"``).
        """
        order = self._channel_order([frame], channel_order, "describe_crops")
        try:
            img = to_rgb(frame, 0, order, self.max_pixels)
            boxes = list(boxes)
        except (InputError, TypeError) as e:
            if (on_error or self.on_error) == "raise":
                raise InputError(f"frame: {e}") from None
            log.warning("frame: %s", e)
            return [Description("", [], {}, error=f"frame: {e}") for _ in range(_count(boxes))]

        def crop(box: Sequence[float], i: int) -> np.ndarray:
            x1, y1, x2, y2 = clip_box(box, img.height, img.width, i)
            if y2 - y1 < self.min_crop[0] or x2 - x1 < self.min_crop[1]:
                raise InputError(f"box {i}: {x2 - x1}x{y2 - y1} px is smaller than the minimum crop "
                                 f"{self.min_crop[1]}x{self.min_crop[0]} (width x height; Describer(min_crop=...))")
            return preprocess(img.crop((x1, y1, x2, y2)), *self._pre)

        return self._run([(lambda b=b, i=i: crop(b, i)) for i, b in enumerate(boxes)], max_new_tokens, on_error,
                         decoding=decoding)

    def _channel_order(self, inputs: Sequence[ImageInput], channel_order: str | None, call: str) -> str:
        """The channel order for ``inputs``: the call's, else the Describer's; TypeError if an array has none."""
        _check_channel_order(channel_order)
        order = channel_order or self.channel_order
        if order is None:
            if any(isinstance(x, np.ndarray) for x in inputs):
                raise TypeError(f"{call}(): a numpy array input needs channel_order='rgb' or 'bgr' (OpenCV frames "
                                "are BGR); pass it to this call or to Describer(...)")
            order = "rgb"  # unused: only arrays have a channel order
        return order

    def _alternative(self, h: Hypothesis, heads: dict[str, dict[str, float]] | None = None) -> Alternative:
        text = detokenize(h.tokens, self._itos)
        attributes = parse_attributes(text)
        if heads is not None:
            attributes = combine(attributes, heads, self.attribute_rule)
        return Alternative(text, h.tokens, h.score, attributes)

    def _head_rows(self, probs: np.ndarray | None, n: int) -> list[dict[str, dict[str, float]] | None]:
        """Each image's calibrated head distributions (None for every image when the batch has none)."""
        if probs is None or self.attribute_heads is None:
            return [None] * n
        return [head_distributions(row, self.attribute_heads) for row in np.asarray(probs, np.float32)[:n]]

    def generate_ids(self, pixels: np.ndarray, max_new_tokens: int | None = None, stop_at_eos: bool = True, *,
                     no_repeat_ngram_size: int = 0, check_only: bool = False,
                     backend: Any = None) -> tuple[list[list[int]], dict[str, float]]:
        """Greedy ids for preprocessed float32 (B, 3, H, W), B <= max_batch (for benchmarks and tests).

        No repetition guard unless asked (the export's parity check compares these ids with PyTorch's).
        ``backend``: what the loop runs on instead of this Describer's backend (a wrapper of it)."""
        n = self.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        limit = self.bundle.limits.max_positions
        if not 1 <= n <= limit:  # past the position table the decoder fails deep inside the backend
            raise ValueError(f"max_new_tokens must be in [1, {limit}], got {n}")
        if pixels.shape[0] > self.max_batch:
            raise ValueError(f"batch {pixels.shape[0]} exceeds max_batch {self.max_batch}")
        if check_only:
            return [], {}
        return greedy_decode(backend or self.backend, np.ascontiguousarray(pixels, np.float32), self._bos, self._eos,
                             n, stop_at_eos, no_repeat_ngram_size)

    def generate(self, pixels: np.ndarray, decoding: DecodingOptions | None = None, max_new_tokens: int | None = None,
                 image_index: Sequence[int] | None = None, *,
                 backend: Any = None) -> tuple[list[list[Hypothesis]], dict[str, float]]:
        """Ranked hypotheses per image of preprocessed float32 (B, 3, H, W) with ``decoding`` (default: the
        Describer's). ``image_index``: each row's index within the call (the sampling seed rule; default 0..B-1).
        ``backend``: what the loops run on instead of this Describer's backend (a wrapper of it)."""
        opts = self.decoding if decoding is None else self._check_decoding(decoding)
        n = next((v for v in (max_new_tokens, opts.max_new_tokens) if v is not None), self.max_new_tokens)
        if opts.mode == "greedy":
            ids, timings = self.generate_ids(pixels, n, no_repeat_ngram_size=opts.no_repeat_ngram_size, backend=backend)
            return [[Hypothesis(row)] for row in ids], timings
        self.generate_ids(pixels, n, check_only=True)
        x = np.ascontiguousarray(pixels, np.float32)
        if opts.mode == "beam":
            return beam_search(backend or self.backend, x, self._bos, self._eos, n, opts)
        return sample_decode(backend or self.backend, x, self._bos, self._eos, n, opts,
                             list(range(len(x))) if image_index is None else list(image_index))

    def _run(self, loaders: list[Any], max_new_tokens: int | None, on_error: str | None, *,
             warn: bool = True, decoding: DecodingOptions | None = None, first_index: int = 0) -> list[Description]:
        """Describe what ``loaders`` return, in batches; ``warn=False``: skipped inputs are not logged (the caller
        reports each one itself, as ``pvlm-describe`` does). ``first_index``: the call's index of ``loaders[0]``."""
        policy = on_error or self.on_error
        opts = self.decoding if decoding is None else self._check_decoding(decoding)
        results: list[Description | None] = [None] * len(loaders)
        for start in range(0, len(loaders), self.max_batch):
            t0 = time.perf_counter()
            good, arrays = [], []
            for i in range(start, min(start + self.max_batch, len(loaders))):
                try:
                    arrays.append(loaders[i]())
                    good.append(i)
                except InputError as e:
                    if policy == "raise":
                        raise
                    if warn:
                        log.warning("%s", e)
                    results[i] = Description("", [], {}, error=str(e))
            if not good:
                continue
            t1 = time.perf_counter()
            tap = _EncoderTap(self.backend)
            hyps, timings = self.generate(np.stack(arrays), opts, max_new_tokens, [first_index + i for i in good],
                                          backend=tap)
            timings = {"preprocess_ms": (t1 - t0) * 1e3, **timings, "total_ms": (time.perf_counter() - t0) * 1e3,
                       "batch": len(good)}
            for i, ranked, heads in zip(good, hyps, self._head_rows(tap.attributes, len(good))):
                alts = [self._alternative(h, heads) for h in ranked]
                best = alts[0]
                results[i] = Description(best.text, best.tokens, best.attributes, dict(timings), alternatives=alts)
        return [r for r in results if r is not None]


__all__ = ["Alternative", "DecodingOptions", "Description", "Describer", "InputError", "describe_input", "detokenize", "greedy_decode"]
