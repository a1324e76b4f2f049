"""``evaluate``: caption metrics, attribute accuracy, backend parity and throughput on a labelled set.

The bundle's descriptions (first backend) are scored against the dataset's reference captions
with the COCO caption scorers (BLEU-1..4, ROUGE-L, CIDEr; METEOR when Java runs), its parsed
attributes against the dataset's labels, and every backend's token ids against the PyTorch FP32
reference (``pvlm.generate``) on the same images.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from runtime.attribute_schema import FIELD, FIELDS, PERSON_KEYS

log = logging.getLogger(__name__)

CAPTION_METRICS: tuple[str, ...] = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr")
# Scored only where the ground truth states them (a caption may leave the person out).
OPTIONAL_CATEGORIES: tuple[str, ...] = PERSON_KEYS
# Not scored: the synthetic captions name the shoes in some templates only, so a description that leaves
# them out is not wrong.
_UNSCORED = frozenset(("shoes_color",))
# Every labelled field of the attribute schema (upper, upper_color, lower, lower_color, headwear, carrying,
# posture, view), in the parser's order.
ATTRIBUTE_CATEGORIES: tuple[str, ...] = tuple(
    f.key for f in FIELDS if f.drawn and f.key not in OPTIONAL_CATEGORIES and f.key not in _UNSCORED)
# Categories whose absence from a caption means "none" (captions name a hat or a bag when there is one);
# for the others, a reference caption that does not mention them gives no ground truth.
_ABSENCE_IS_NONE = frozenset(f.key for f in FIELDS if "none" in f.drawn)
SPICE_UNAVAILABLE = "unavailable: SPICE needs Stanford CoreNLP models downloaded at run time (offline here)"
METEOR_TIMEOUT_S = 300.0

# Words (keeping inner hyphens/apostrophes: "t-shirt", "don't") or single punctuation characters.
_WORD_RE = re.compile(r"[a-z0-9]+(?:['\-][a-z0-9]+)*|[^\sa-z0-9]")
_WORD_START = re.compile(r"[a-z0-9]")


@dataclass(frozen=True)
class EvalConfig:
    """Options of ``pvlm-eval``.

    ``model``: an export bundle directory or a ``.pt`` checkpoint (exported to a temporary bundle).
    ``backends``: runtime backends to run; the first one's descriptions are scored.
    ``reference``: compare every backend's token ids with the PyTorch FP32 reference.
    ``meteor``: compute METEOR (starts a Java process, ~10 s); reported unavailable when Java does not run.
    ``min_confidence``: the Describer's abstention threshold (bundles with attribute heads; ``bench.confidence``).
    ``decoding``: how every backend decodes (``runtime.decoding.DecodingOptions``; None: greedy); the PyTorch
    parity check compares greedy decodings only. ``decodings``: more decodings of the first backend to score
    side by side (``DecodingOptions.parse`` labels: ``greedy``, ``beamsN``, ``sample``, ``original``), each
    with ``decoding``'s seed, length penalty and repetition guard.
    """

    model: str
    data: str
    image_root: str | None = None
    backends: tuple[str, ...] = ("onnxruntime-cpu",)
    limit: int | None = None
    max_new_tokens: int | None = None
    batch_size: int = 32
    reference: bool = True
    progress: bool = True
    meteor: bool = True
    min_confidence: float = 0.0
    decoding: Any = None
    decodings: tuple[str, ...] = ()


# --------------------------------------------------------------------------- caption metrics


def tokenize_caption(text: str) -> str:
    """Lowercase, split punctuation off words and drop it (as coco-caption's PTBTokenizer does)."""
    return " ".join(t for t in _WORD_RE.findall((text or "").lower().replace("\u2019", "'")) if _WORD_START.match(t))


def caption_metrics(predictions: Sequence[str], references: Sequence[str | Sequence[str]],
                    meteor: bool = False) -> dict[str, Any]:
    """COCO caption metrics of ``predictions`` against ``references`` (one string or a list per image).

    Returns floats for :data:`CAPTION_METRICS`, plus ``METEOR`` (float, or ``"unavailable: <reason>"``;
    skipped unless ``meteor``) and ``SPICE`` (always unavailable offline). CIDEr's IDF is computed over
    this set of references, so it depends on the set (a single image scores 0).
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("no captions to score")
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError:
        raise RuntimeError("caption metrics need pycocoevalcap: pip install 'personvlm-toolkit[eval]'") from None
    gts = {i: [tokenize_caption(r) for r in ([refs] if isinstance(refs, str) else refs)]
           for i, refs in enumerate(references)}
    res = {i: [tokenize_caption(p)] for i, p in enumerate(predictions)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    out: dict[str, Any] = {f"BLEU-{n}": float(b) for n, b in enumerate(bleu, 1)}
    out["ROUGE-L"] = float(rouge)
    out["CIDEr"] = float(cider)
    out["METEOR"] = meteor_score(gts, res) if meteor else "unavailable: disabled"
    out["SPICE"] = SPICE_UNAVAILABLE
    return out


def meteor_score(gts: dict[int, list[str]], res: dict[int, list[str]],
                 timeout: float = METEOR_TIMEOUT_S) -> float | str:
    """METEOR 1.5 through pycocoevalcap's Java wrapper; ``"unavailable: <reason>"`` when it cannot run."""
    java = shutil.which("java")
    if java is None:
        return "unavailable: java not found on PATH"
    try:
        subprocess.run([java, "-version"], capture_output=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as e:
        return f"unavailable: java does not run ({type(e).__name__})"
    try:
        from pycocoevalcap.meteor.meteor import Meteor
    except ImportError:
        return "unavailable: pycocoevalcap not installed"
    try:
        scorer = Meteor()
    except OSError as e:
        return f"unavailable: could not start METEOR ({e})"
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["score"] = float(scorer.compute_score(gts, res)[0])
        except Exception as e:  # noqa: BLE001 - any failure of the Java side means "unavailable"
            box["error"] = e

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(timeout)
    proc = scorer.meteor_p
    if worker.is_alive() or "score" not in box:  # kill it: readline() then sees EOF and the thread ends
        proc.kill()
        worker.join(10)
    try:
        proc.stdin.close()
    except OSError:
        pass
    proc.kill()
    proc.wait()
    # The wrapper's __del__ takes its lock, which a failed compute_score never released: give it a fresh one.
    scorer.lock = threading.Lock()
    if "score" in box:
        return box["score"]
    if worker.is_alive() or "error" not in box:
        return f"unavailable: METEOR did not answer within {timeout:.0f} s"
    err = proc.stderr.read().decode(errors="replace").strip().splitlines() if proc.stderr else []
    reason = err[-1] if err else f"{type(box['error']).__name__}: {box['error']}"
    return f"unavailable: METEOR failed ({reason})"


# --------------------------------------------------------------------------- attributes


def normalize_attribute(key: str, value: Any) -> Any:
    """One attribute value in the parser's conventions: ``"none"``/empty -> None; ``carrying`` -> sorted list."""
    field = FIELD.get(key)
    if field is not None and field.many:
        if value is None:
            return []
        items = [value] if isinstance(value, str) else list(value)
        return sorted({str(v).strip().lower() for v in items if v is not None and str(v).strip().lower()
                       not in ("", "none", "nothing")})
    if value is None:
        return None
    s = str(value).strip().lower()
    return None if s in ("", "none", "unknown") else s


def expected_attributes(labels: Mapping[str, Any], reference: str,
                        categories: Sequence[str]) -> dict[str, tuple[Any, str]]:
    """Ground truth per category: ``(value, source)``, source ``"label"`` or ``"caption"``.

    Labels win where present; other categories come from parsing the reference caption.
    A caption that does not mention a category gives None (unknown), except for headwear and carrying.
    """
    from runtime.attributes import parse_attributes

    parsed: dict[str, Any] | None = None
    out: dict[str, tuple[Any, str]] = {}
    for key in categories:
        if key in labels:
            out[key] = (normalize_attribute(key, labels[key]), "label")
            continue
        if parsed is None:
            parsed = parse_attributes(reference)
        out[key] = (normalize_attribute(key, parsed.get(key)), "caption")
    return out


def attribute_accuracy(predicted: Sequence[Mapping[str, Any]], expected: Sequence[Mapping[str, Any]],
                       categories: Sequence[str] | None = None,
                       sources: Sequence[Mapping[str, str]] | None = None) -> dict[str, Any]:
    """Accuracy per category of ``predicted`` against ``expected`` attribute dicts (one pair per image).

    Both sides are normalised (:func:`normalize_attribute`). Where ``sources`` says an expected value
    came from a caption and it is None, the image is not counted for that category (the caption is
    silent about it), except for headwear and carrying. Returns ``{"categories": {key: {"accuracy",
    "correct", "n", "majority", "majority_rate", "top_prediction", "top_prediction_rate", "confusion"}},
    "mean": macro mean over categories with n > 0 (None if none)}``; see :func:`majority_baseline`.
    """
    if len(predicted) != len(expected):
        raise ValueError(f"{len(predicted)} predictions for {len(expected)} expected attribute sets")
    cats = list(categories) if categories is not None else list(ATTRIBUTE_CATEGORIES)
    result: dict[str, dict[str, Any]] = {}
    for key in cats:
        correct = n = 0
        confusion: dict[str, dict[str, int]] = {}
        for i, (p, e) in enumerate(zip(predicted, expected)):
            ok = attribute_correct(key, p.get(key), e.get(key),
                                   sources[i].get(key, "label") if sources is not None else "label")
            if ok is None:
                continue
            n += 1
            correct += ok
            row = confusion.setdefault(attribute_label(key, e.get(key)), {})
            pred = attribute_label(key, p.get(key))
            row[pred] = row.get(pred, 0) + 1
        result[key] = {"accuracy": correct / n if n else None, "correct": correct, "n": n,
                       **majority_baseline(confusion), "confusion": confusion}
    scored = [v["accuracy"] for v in result.values() if v["n"]]
    return {"categories": result, "mean": sum(scored) / len(scored) if scored else None}


def attribute_label(key: str, value: Any) -> str:
    """One normalised attribute value as a table label: ``"none"`` for None/empty, items joined by ``+``."""
    v = normalize_attribute(key, value)
    if v is None or v == []:
        return "none"
    return "+".join(v) if isinstance(v, list) else str(v)


def majority_baseline(confusion: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    """The always-say-the-commonest-value baseline of a confusion table (expected -> predicted -> count).

    ``majority``: that value; ``majority_rate``: its share of the ground truth (the accuracy of a model
    that ignores the image); ``top_prediction`` / ``top_prediction_rate``: the model's commonest
    answer and its share (near 1.0 means mode collapse).
    """
    truth = {e: sum(row.values()) for e, row in confusion.items()}
    preds: dict[str, int] = {}
    for row in confusion.values():
        for p, c in row.items():
            preds[p] = preds.get(p, 0) + c
    n = sum(truth.values())
    if not n:
        return {"majority": None, "majority_rate": None, "top_prediction": None, "top_prediction_rate": None}
    maj = max(sorted(truth), key=lambda k: truth[k])
    top = max(sorted(preds), key=lambda k: preds[k])
    return {"majority": maj, "majority_rate": truth[maj] / n, "top_prediction": top, "top_prediction_rate": preds[top] / n}


def attribute_correct(key: str, predicted: Any, expected: Any, source: str = "label") -> bool | None:
    """Whether one prediction matches; None when there is no ground truth for it."""
    exp = normalize_attribute(key, expected)
    if source == "caption" and exp is None and key not in _ABSENCE_IS_NONE:
        return None
    return normalize_attribute(key, predicted) == exp


# --------------------------------------------------------------------------- parity


def token_parity(reference: Sequence[Sequence[int]], candidate: Sequence[Sequence[int]]) -> dict[str, Any]:
    """Exact-sequence match rate and token agreement (equal positions / max length, summed over images)."""
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference sequences for {len(candidate)} candidates")
    exact = equal = total = 0
    mismatched: list[int] = []
    for i, (a, b) in enumerate(zip(reference, candidate)):
        same = list(a) == list(b)
        exact += same
        if not same:
            mismatched.append(i)
        equal += sum(x == y for x, y in zip(a, b))
        total += max(len(a), len(b))
    n = len(reference)
    return {
        "n": n,
        "exact_match_rate": exact / n if n else None,
        "token_agreement": equal / total if total else 1.0,
        "mismatched": mismatched[:50],
        "n_mismatched": len(mismatched),
    }


def reference_generate(checkpoint: Path, images: Sequence[Path], max_new_tokens: int, batch_size: int,
                       progress: bool = False) -> tuple[list[list[int]], float]:
    """The PyTorch FP32 reference: ``pvlm.generate`` on ``pvlm.data.preprocess`` pixels; (ids, seconds)."""
    import torch
    from PIL import Image

    import pvlm
    from pvlm.data import preprocess

    model, _, _ = pvlm.load_checkpoint(checkpoint)
    model = model.eval()
    if not 1 <= max_new_tokens <= model.cfg.max_len:
        raise ValueError(f"max_new_tokens must be in [1, {model.cfg.max_len}] for {checkpoint}, got {max_new_tokens}")
    out: list[list[int]] = []
    t0 = time.perf_counter()
    bar = tqdm(total=len(images), desc="pytorch reference", unit="img", disable=not progress, leave=False)
    for start in range(0, len(images), batch_size):
        pixels = []
        for p in images[start:start + batch_size]:
            with Image.open(p) as im:
                pixels.append(preprocess(im.convert("RGB"), model.cfg))
        with torch.no_grad():
            ids = pvlm.generate(model, torch.stack(pixels), max_new_tokens)
        out += [pvlm.trim(row, model.cfg.eos_id) for row in ids]
        bar.update(len(pixels))
    bar.close()
    return out, time.perf_counter() - t0


# --------------------------------------------------------------------------- the evaluation


def _count_rows(path: Path) -> int:
    with open(path, encoding="utf-8", errors="replace") as f:
        return sum(1 for line in f if line.strip())


def _validate(cfg: EvalConfig) -> None:
    from runtime.backends import NAMES

    if not cfg.backends:
        raise ValueError("give at least one backend")
    unknown = [b for b in cfg.backends if b not in NAMES]
    if unknown:
        raise ValueError(f"unknown backend {unknown[0]!r}; choose from {', '.join(NAMES)}")
    if cfg.limit is not None and cfg.limit < 1:
        raise ValueError(f"limit must be >= 1, got {cfg.limit}")
    if cfg.batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {cfg.batch_size}")
    if cfg.max_new_tokens is not None and cfg.max_new_tokens < 1:
        raise ValueError(f"max new tokens must be >= 1, got {cfg.max_new_tokens}")
    if not Path(cfg.model).exists():
        raise FileNotFoundError(f"{cfg.model}: no such bundle directory or checkpoint")
    if not Path(cfg.data).is_file():
        raise FileNotFoundError(f"{cfg.data}: no such dataset file")


def _source_checkpoint(bundle: Any) -> tuple[Path | None, str | None]:
    """The bundle's source checkpoint if it still exists, else (None, why not)."""
    from runtime.bundle import BundleError

    try:
        return bundle.find_source_checkpoint(), None
    except BundleError as e:
        return None, str(e)


def _decodings(cfg: EvalConfig, records: Sequence[Any], main: Any, metrics: dict[str, Any],
               attributes: _AttributeScores, scored_run: _BackendRun,
               extra: dict[str, _BackendRun]) -> dict[str, dict[str, Any]]:
    """The report's ``decodings``: the scored decoding first, then each extra one scored the same way."""
    decodings = {main.label: _decoding_entry(main, metrics, attributes.report, scored_run.throughput)}
    for label, run in extra.items():
        scores = _score_attributes(records, run.outputs)
        decodings[label] = _decoding_entry(run.decoding, _caption_scores(cfg, records, run.outputs, {}),
                                           scores.report, run.throughput)
    return decodings


def _describe_all(cfg: EvalConfig, records: Sequence[Any], main: Any, timing: dict[str, Any]) -> tuple[Any, ...]:
    """Every backend's run of the main decoding, the extra decodings' runs and the PyTorch parity:
    ``(bundle, runs, extra, parity, reference_ids)``."""
    from runtime.bundle import Bundle

    with tempfile.TemporaryDirectory(prefix="pvlm-eval-") as tmp:
        bundle_dir = _bundle_dir(cfg, Path(tmp), timing)
        bundle = Bundle.load(bundle_dir, verify=False)
        reference_ckpt, reason = _reference_checkpoint(cfg, bundle_dir, bundle)
        images = [r.image for r in records]
        # never past the bundle's stated limit (TensorRT engines are built for it; ONNX would stretch)
        batch = min(cfg.batch_size, bundle.limits.max_batch)
        if main.mode != "greedy" and reference_ckpt is not None:
            reference_ckpt, reason = None, f"the PyTorch reference decodes greedily; this evaluation uses {main.label}"
        runs = {name: _describe_with(cfg, bundle_dir, name, images, batch, main) for name in cfg.backends}
        outputs = {name: run.outputs for name, run in runs.items()}
        max_new_tokens = runs[cfg.backends[-1]].max_new_tokens
        parity, ref_ids = _parity(reference_ckpt, reason, images, max_new_tokens, batch, outputs, cfg.progress,
                                  timing, main.no_repeat_ngram_size)
        extra = {label: _describe_with(cfg, bundle_dir, cfg.backends[0], images, batch, opts)
                 for label, opts in _extra_decodings(cfg, main).items()}
    return bundle, runs, extra, parity, ref_ids


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Describe every image of ``cfg.data`` with each backend and score the first; returns the report.

    Report keys: ``config``, ``model``, ``n_images``, ``skipped``, ``decoding`` (the scored decoding's label),
    ``caption_metrics``, ``decodings`` (per decoding label: ``options``, ``caption_metrics``, ``attribute_accuracy``,
    ``attribute_mean``, ``throughput``; the scored decoding first), ``attributes``
    (``categories``/``mean``), ``confidence`` (``bench.confidence``: ECE per head field, abstention), ``parity`` (``available``, ``reason``, ``reference``, ``backends``),
    ``throughput`` (per backend), ``timing``, ``machine``, ``rows`` (per image, for the HTML report).
    Raises ValueError / FileNotFoundError on bad input (unknown backend, empty dataset, ...).
    """

    from .confidence import confidence_report
    from .speed import machine_info

    t_start = time.perf_counter()
    _validate(cfg)
    records, skipped = _load_records(cfg)
    timing: dict[str, Any] = {"load_s": time.perf_counter() - t_start}
    model_path = Path(cfg.model)
    main = _main_decoding(cfg)
    bundle, runs, extra, parity, ref_ids = _describe_all(cfg, records, main, timing)
    outputs = {name: run.outputs for name, run in runs.items()}
    scored = outputs[cfg.backends[0]]
    metrics = _caption_scores(cfg, records, scored, timing)
    attributes = _score_attributes(records, scored)
    decodings = _decodings(cfg, records, main, metrics, attributes, runs[cfg.backends[0]], extra)
    confidence = confidence_report(bundle.manifest.attribute_heads, attributes.predicted, attributes.expected,
                                   attributes.sources, attributes.categories, cfg.min_confidence)
    rows = _image_rows(records, scored, attributes, ref_ids, outputs, cfg.backends[0])
    timing["total_s"] = time.perf_counter() - t_start
    return {
        "config": asdict(cfg),
        "model": {"path": str(model_path), "kind": "checkpoint" if model_path.is_file() else "bundle",
                  **bundle.model_config.summary(("backbone", "image_size", "d_model", "n_layers", "vocab_size"))},
        "n_images": len(records),
        "skipped": skipped,
        "scored_backend": cfg.backends[0],
        "decoding": main.label,
        "caption_metrics": metrics,
        "decodings": decodings,
        "attributes": attributes.report,
        "confidence": confidence,
        "parity": parity,
        "throughput": {name: run.throughput for name, run in runs.items()},
        "timing": timing,
        "machine": machine_info(None),
        "rows": rows,
    }


def _load_records(cfg: EvalConfig) -> tuple[list[Any], int]:
    """The dataset's usable records (at most ``cfg.limit``) and how many rows were skipped."""
    from pvlm.data import load_jsonl

    data = Path(cfg.data)
    records = load_jsonl(data, cfg.image_root)
    skipped = max(0, _count_rows(data) - len(records))
    if not records:
        raise ValueError(f"{data}: no usable images ({skipped} row(s) skipped)")
    if cfg.limit is not None:
        records = records[: cfg.limit]
    return records, skipped


def _bundle_dir(cfg: EvalConfig, tmp: Path, timing: dict[str, Any]) -> Path:
    """The bundle to evaluate: ``cfg.model`` itself, or a checkpoint exported under ``tmp`` (timed)."""
    model_path = Path(cfg.model)
    if not model_path.is_file():
        return model_path
    from export import export_onnx

    t0 = time.perf_counter()
    log.info("exporting %s to a temporary bundle", model_path)
    export_kw = {} if cfg.max_new_tokens is None else {"max_new_tokens": cfg.max_new_tokens}
    bundle_dir = export_onnx(model_path, tmp / "bundle", max_batch=cfg.batch_size, **export_kw)
    timing["export_s"] = time.perf_counter() - t0
    return bundle_dir


def _reference_checkpoint(cfg: EvalConfig, bundle_dir: Path, bundle: Any) -> tuple[Path | None, str | None]:
    """The PyTorch reference to compare with, or (None, why not).

    A checkpoint is its own reference; a bundle names its source checkpoint.
    """
    model_path = Path(cfg.model)
    reference_ckpt: Path | None = model_path if model_path.is_file() else None
    reason: str | None = None
    if model_path.is_dir():
        reference_ckpt, reason = _source_checkpoint(bundle)
    if not cfg.reference:
        reference_ckpt, reason = None, "reference comparison disabled"
    return reference_ckpt, reason


@dataclass(frozen=True)
class _BackendRun:
    """One backend's descriptions of the whole set, its throughput entry and the token limit it used."""

    outputs: list[Any]
    throughput: dict[str, Any]
    max_new_tokens: int
    decoding: Any = None


def _main_decoding(cfg: EvalConfig) -> Any:
    """``cfg.decoding``, or greedy with the runtime's defaults."""
    from runtime.decoding import DecodingOptions

    if cfg.decoding is not None and not isinstance(cfg.decoding, DecodingOptions):
        raise ValueError(f"decoding must be runtime.decoding.DecodingOptions, got {type(cfg.decoding).__name__}")
    return cfg.decoding or DecodingOptions()


def _extra_decodings(cfg: EvalConfig, main: Any) -> dict[str, Any]:
    """``cfg.decodings`` as options (the main decoding's seed, length penalty and guard), the main one left out."""
    from runtime.decoding import DecodingOptions

    shared = {"seed": main.seed, "length_penalty": main.length_penalty,
              "no_repeat_ngram_size": main.no_repeat_ngram_size, "max_new_tokens": main.max_new_tokens}
    out = {}
    for label in cfg.decodings:
        opts = DecodingOptions.parse(label, **shared)
        if opts.label != main.label:
            out[opts.label] = opts
    return out


def _decoding_entry(opts: Any, metrics: dict[str, Any], attributes: dict[str, Any],
                    throughput: dict[str, Any]) -> dict[str, Any]:
    """One decoding's line of the report: its options, caption metrics, attribute accuracy and speed."""
    return {"options": asdict(opts), "caption_metrics": metrics,
            "attribute_accuracy": {k: v["accuracy"] for k, v in attributes["categories"].items()},
            "attribute_mean": attributes["mean"], "throughput": throughput}


def _describe_with(cfg: EvalConfig, bundle_dir: Path, name: str, images: Sequence[Path], batch: int,
                   decoding: Any = None) -> _BackendRun:
    """Describe ``images`` with backend ``name`` in batches of ``batch`` with ``decoding``, timing the whole set."""
    from runtime import Describer

    with Describer(bundle_dir, backend=name, max_batch=batch, max_new_tokens=cfg.max_new_tokens,
                   min_confidence=cfg.min_confidence, decoding=decoding) as describer:
        max_new_tokens = describer.max_new_tokens
        outs: list[Any] = []
        label = "" if decoding is None else f", {decoding.label}"
        bar = tqdm(total=len(images), desc=f"describing ({name}{label})", unit="img", disable=not cfg.progress,
                   leave=False)
        describer.describe(images[:1])  # untimed: the sessions' first run allocates their memory
        t0 = time.perf_counter()
        for start in range(0, len(images), batch):
            outs += describer.describe(images[start:start + batch], first_index=start)
            bar.update(len(outs) - bar.n)
        seconds = time.perf_counter() - t0
        bar.close()
        throughput = {"backend": describer.backend_name, "images": len(images), "seconds": seconds,
                      "images_per_s": len(images) / seconds if seconds > 0 else None,
                      "batch_size": describer.max_batch, "max_new_tokens": max_new_tokens,
                      "errors": sum(not d.ok for d in outs)}
    return _BackendRun(outs, throughput, max_new_tokens, describer.decoding)


def _parity(reference_ckpt: Path | None, reason: str | None, images: Sequence[Path], max_new_tokens: int,
            batch: int, outputs: Mapping[str, list[Any]], progress: bool, timing: dict[str, Any],
            guard: int = 0) -> tuple[dict[str, Any], list[list[int]] | None]:
    """Every backend's token ids against the PyTorch reference: (the report's ``parity``, reference ids or None).

    ``guard``: the greedy decoding's ``no_repeat_ngram_size``; the (unguarded) reference is cut where the guard
    ends a row (``runtime.decoding.cut_at_repeat``), which is exactly what guarded greedy decoding gives."""
    from runtime.decoding import cut_at_repeat

    parity: dict[str, Any] = {"available": False, "reason": reason,
                              "reference": str(reference_ckpt) if reference_ckpt else None, "backends": {}}
    ref_ids: list[list[int]] | None = None
    if reference_ckpt is not None:
        try:
            ref_ids, ref_s = reference_generate(reference_ckpt, images, int(max_new_tokens), batch, progress)
        except ImportError as e:
            parity["reason"] = f"the PyTorch reference needs torch ({e})"
        else:
            timing["reference_s"] = ref_s
            ref_ids = [cut_at_repeat(row, guard) for row in ref_ids]
            parity.update(available=True, reason=None, max_new_tokens=int(max_new_tokens), no_repeat_ngram_size=guard)
            parity["backends"] = {n: token_parity(ref_ids, [d.tokens for d in outs]) for n, outs in outputs.items()}
    if parity["reason"]:
        log.info("no backend parity: %s", parity["reason"])
    return parity, ref_ids


def _caption_scores(cfg: EvalConfig, records: Sequence[Any], scored: Sequence[Any],
                    timing: dict[str, Any]) -> dict[str, Any]:
    """Caption metrics of the scored backend's descriptions against the reference captions (timed)."""
    t0 = time.perf_counter()
    metrics = caption_metrics([d.text for d in scored], [r.caption for r in records], meteor=cfg.meteor)
    timing["metrics_s"] = time.perf_counter() - t0
    return metrics


@dataclass(frozen=True)
class _AttributeScores:
    """Per-image attribute ground truth and predictions over the scored categories, and their accuracy."""

    categories: list[str]
    expected: list[dict[str, Any]]
    sources: list[dict[str, str]]
    predicted: list[dict[str, Any]]
    report: dict[str, Any]


def _score_attributes(records: Sequence[Any], scored: Sequence[Any]) -> _AttributeScores:
    """Parsed attributes of the scored descriptions against the labels (or the reference captions)."""
    categories = list(ATTRIBUTE_CATEGORIES)
    # gender/age: only where the ground truth has them (labels, or a caption that mentions them)
    expected_all = [expected_attributes(r.attributes, r.caption, ATTRIBUTE_CATEGORIES + OPTIONAL_CATEGORIES)
                    for r in records]
    categories += [k for k in OPTIONAL_CATEGORIES if any(e[k][0] is not None for e in expected_all)]
    expected = [{k: e[k][0] for k in categories} for e in expected_all]
    sources = [{k: e[k][1] for k in categories} for e in expected_all]
    predicted = [d.attributes if d.ok else {} for d in scored]
    attrs = attribute_accuracy(predicted, expected, categories, sources)
    attrs["source"] = ("labels" if all(s == "label" for row in sources for s in row.values())
                       else "captions" if all(s == "caption" for row in sources for s in row.values()) else "mixed")
    return _AttributeScores(categories, expected, sources, predicted, attrs)


def _image_rows(records: Sequence[Any], scored: Sequence[Any], attributes: _AttributeScores,
                ref_ids: list[list[int]] | None, outputs: Mapping[str, list[Any]],
                scored_backend: str) -> list[dict[str, Any]]:
    """One row per image for the HTML report: captions, attributes, reference match, other backends' texts."""
    categories, expected, sources, predicted = (attributes.categories, attributes.expected, attributes.sources,
                                                attributes.predicted)
    rows = []
    for i, (r, d) in enumerate(zip(records, scored)):
        row_attrs = {k: {"predicted": normalize_attribute(k, predicted[i].get(k)), "expected": expected[i][k],
                         "correct": attribute_correct(k, predicted[i].get(k), expected[i][k], sources[i][k])}
                     for k in categories}
        row: dict[str, Any] = {"image": str(r.image), "reference": r.caption, "generated": d.text, "error": d.error,
                               "attributes": row_attrs}
        if ref_ids is not None:
            row["matches_reference"] = list(d.tokens) == ref_ids[i]
        others = {n: outs[i].text for n, outs in outputs.items() if n != scored_backend and outs[i].text != d.text}
        if others:
            row["other_backends"] = others
        rows.append(row)
    return rows


__all__ = [
    "ATTRIBUTE_CATEGORIES", "CAPTION_METRICS", "EvalConfig", "attribute_accuracy", "attribute_correct",
    "attribute_label", "majority_baseline",
    "caption_metrics", "evaluate", "expected_attributes", "meteor_score", "normalize_attribute", "reference_generate",
    "token_parity", "tokenize_caption",
]
