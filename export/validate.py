"""Every export is validated against its source (Optimum's ``validate_model_outputs`` habit).

Structural checks (onnx checker with full check, strict shape inference, names and dynamic
axes against the spec, an ONNX Runtime session) and numeric parity against the PyTorch
model on real inputs. Failures are collected and raised together as one typed error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pvlm.data import normalize
from pvlm.model import PersonVLM
from runtime.backends.host_cache import HostCacheBackend

from .spec import GraphSpec

log = logging.getLogger(__name__)

# Batch sizes for parity: singles and batches mixed, 32 images in all.
PARITY_BATCHES = (1, 4, 1, 8, 2, 16)


class ValidationError(RuntimeError):
    """An exported graph failed structural or numeric checks; ``failures`` lists each one."""

    def __init__(self, failures: list[str], report: dict[str, Any] | None = None):
        self.failures, self.report = failures, report or {}
        super().__init__("export validation failed: " + "; ".join(failures))


@dataclass
class ParityReport:
    """Numbers measured at export time, recorded in the manifest."""

    images: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    encoder_max_abs_diff: float = 0.0
    logits_max_abs_diff: float = 0.0
    logits_max_abs: float = 0.0
    steps_compared: int = 0
    sequences_identical: int = 0
    token_agreement: float = 1.0
    max_new_tokens: int = 0
    nonfinite: int = 0  # NaN/inf values in encoder outputs or logits (FP16 overflow shows up here)
    decoder_ort: dict[str, Any] | None = None  # the same numbers for decoder_ort.onnx

    def to_dict(self) -> dict[str, Any]:
        """Manifest form."""
        d = dict(self.__dict__)
        d["sequence_match_rate"] = self.sequences_identical / max(1, self.images)
        return d


def check_graph(path: Path, spec: GraphSpec) -> list[str]:
    """onnx checker (full), strict shape inference, and I/O names/dtypes/dynamic axes against ``spec``."""
    import onnx

    failures: list[str] = []
    try:
        onnx.checker.check_model(str(path), full_check=True)
        onnx.shape_inference.infer_shapes_path(str(path), str(path) + ".inferred", strict_mode=True)
        Path(str(path) + ".inferred").unlink(missing_ok=True)
    except Exception as e:  # noqa: BLE001 - any checker failure is a validation failure
        return [f"{path.name}: onnx checker: {str(e).splitlines()[0][:200]}"]
    model = onnx.load(str(path), load_external_data=False)
    for kind, actual, expected in (("input", model.graph.input, spec.inputs), ("output", model.graph.output, spec.outputs)):
        names = [v.name for v in actual]
        if names != list(expected):
            failures.append(f"{path.name}: {kind} names {names} != {list(expected)}")
            continue
        for v in actual:
            want = expected[v.name]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in v.type.tensor_type.shape.dim]
            if dtype != want.dtype:
                failures.append(f"{path.name}: {v.name} dtype {dtype} != {want.dtype}")
            if len(dims) != len(want.shape):
                failures.append(f"{path.name}: {v.name} rank {len(dims)} != {len(want.shape)}")
                continue
            for axis, (got, exp) in enumerate(zip(dims, want.shape)):
                if isinstance(exp, int) and got != exp:
                    failures.append(f"{path.name}: {v.name} axis {axis} is {got}, expected {exp}")
                if isinstance(exp, str) and not isinstance(got, str):
                    failures.append(f"{path.name}: {v.name} axis {axis} ({exp}) was frozen to {got}")
    return failures


def parity_images(model: PersonVLM, n: int, seed: int = 0) -> np.ndarray:
    """Normalised float32 (n, 3, H, W): 3/4 synthetic person crops, 1/4 uniform-noise images."""
    from pvlm.data import resize_rgb
    from pvlm.synth import render_person, sample_attributes

    cfg = model.cfg
    rng = np.random.default_rng(seed)
    n_synth = n - n // 4
    crops = [resize_rgb(render_person(sample_attributes(rng), rng, size=(256, 128)), cfg.image_size) for _ in range(n_synth)]
    noise = [rng.integers(0, 256, (*cfg.image_size, 3), dtype=np.uint8) for _ in range(n - n_synth)]
    return normalize(np.stack(crops + noise), cfg.mean, cfg.std)


@dataclass
class _Tally:
    """One decoder graph's numbers over the parity run."""

    logits_max_abs_diff: float = 0.0
    steps_compared: int = 0
    sequences_identical: int = 0
    agree: int = 0
    total: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"logits_max_abs_diff": self.logits_max_abs_diff, "steps_compared": self.steps_compared,
                "sequences_identical": self.sequences_identical,
                "token_agreement": self.agree / max(1, self.total)}


class _PortableStep(HostCacheBackend):
    """``decoder.onnx`` through the runtime's own host-cache code (the cache written by slot)."""

    def __init__(self, session: Any, cfg: Any, ck: np.ndarray, cv: np.ndarray, capacity: int):
        super().__init__(cfg.to_dict())
        self.session, self.logits = session, None
        self.state = self.start(ck, cv, capacity)

    def run_decoder(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.logits, ids, nk, nv = self.session.run(None, feeds)
        return ids, nk, nv

    def __call__(self, tokens: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
        ids = self.step(self.state, tokens, t)
        return self.logits, ids


class _BoundStep:
    """``decoder_ort.onnx`` through the runtime's own IO-binding code (cache appended in place)."""

    def __init__(self, bound: Any, ck: np.ndarray, cv: np.ndarray, capacity: int):
        self.bound, self.state = bound, bound.start(ck, cv, capacity)

    def __call__(self, tokens: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
        ids = self.bound.step(self.state, tokens, t)
        return self.bound.logits(self.state), ids


def check_parity(
    model: PersonVLM, encoder_path: Path, decoder_path: Path, max_new_tokens: int,
    batches: tuple[int, ...] = PARITY_BATCHES, atol: float = 1e-4, rtol: float = 1e-5, seed: int = 0,
    ort_paths: tuple[Path, Path] | None = None,
) -> tuple[ParityReport, list[str]]:
    """Compare ONNX Runtime with the PyTorch reference on real images.

    Encoder outputs are compared directly. Each decoder graph (``decoder.onnx``, and
    ``decoder_ort.onnx`` on its ``cross_ort.onnx`` tables when ``ort_paths`` gives both)
    runs step by step on its own ONNX-computed cache, fed the
    reference's greedy tokens; at each step its logits are compared and its argmax must equal
    the reference token. Agreement at every step of a row is exactly "greedy sequence
    identical", without a second decoding loop here.
    """
    import onnxruntime as ort

    from runtime.backends.ort_bound import BoundDecoder

    cfg = model.cfg
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    cpu = ["CPUExecutionProvider"]
    enc = ort.InferenceSession(str(encoder_path), opts, providers=cpu)
    dec = ort.InferenceSession(str(decoder_path), opts, providers=cpu)
    bound = None
    if ort_paths is not None:
        cross, step = (ort.InferenceSession(str(p), opts, providers=cpu) for p in ort_paths)
        bound = BoundDecoder(ort, step, cross, cfg.to_dict(), "cpu")
    tallies = {"decoder": _Tally(), **({"decoder_ort": _Tally()} if bound else {})}
    pixels_all = parity_images(model, sum(batches), seed)
    rep = ParityReport(images=len(pixels_all), batch_sizes=list(batches), max_new_tokens=max_new_tokens)
    start = 0
    for b in batches:
        pixels = pixels_all[start:start + b]
        start += b
        with torch.no_grad():
            ref_k, ref_v = model.cross_kv(model.encode_image(torch.from_numpy(pixels)))
        ck, cv = enc.run(None, {"pixels": pixels})
        rep.nonfinite += int((~np.isfinite(ck)).sum() + (~np.isfinite(cv)).sum())
        rep.encoder_max_abs_diff = max(rep.encoder_max_abs_diff, float(np.abs(ck - ref_k.numpy()).max()),
                                       float(np.abs(cv - ref_v.numpy()).max()))
        steps = {"decoder": _PortableStep(dec, cfg, ck, cv, max_new_tokens)}
        if bound:
            steps["decoder_ort"] = _BoundStep(bound, ck, cv, max_new_tokens)
        t_cache_k, t_cache_v = model.empty_cache(b, max_new_tokens)
        alive = np.ones(b, bool)
        row_ok = {name: np.ones(b, bool) for name in steps}
        tokens = np.full((b, 1), cfg.bos_id, np.int64)
        for t in range(max_new_tokens):
            with torch.no_grad():
                ref_logits, tk, tv = model.decode_step(torch.from_numpy(tokens), torch.full((b, 1), t),
                                                       ref_k, ref_v, t_cache_k, t_cache_v)
            t_cache_k[:, :, :, t], t_cache_v[:, :, :, t] = tk[:, :, :, 0], tv[:, :, :, 0]
            ref_logits = ref_logits.numpy()
            ref_next = ref_logits.argmax(-1)
            rep.logits_max_abs = max(rep.logits_max_abs, float(np.abs(ref_logits[alive]).max(initial=0)))
            for name, step in steps.items():
                logits, ids = step(tokens, t)
                rep.nonfinite += int((~np.isfinite(logits[alive])).sum())
                tally = tallies[name]
                tally.logits_max_abs_diff = max(tally.logits_max_abs_diff,
                                                float(np.abs(logits - ref_logits)[alive].max(initial=0)))
                match = ids == ref_next
                tally.agree += int((match & alive).sum())
                tally.total += int(alive.sum())
                tally.steps_compared += 1
                row_ok[name] &= match | ~alive
            tokens = ref_next[:, None].astype(np.int64)  # teacher-forced with the reference's greedy choice
            alive &= ref_next != cfg.eos_id
            if not alive.any():
                break
        for name, ok in row_ok.items():
            tallies[name].sequences_identical += int(ok.sum())
    main = tallies["decoder"]
    rep.logits_max_abs_diff, rep.steps_compared = main.logits_max_abs_diff, main.steps_compared
    rep.sequences_identical, rep.token_agreement = main.sequences_identical, main.agree / max(1, main.total)
    if bound:
        rep.decoder_ort = tallies["decoder_ort"].to_dict()
    failures = []
    if rep.encoder_max_abs_diff > atol:
        failures.append(f"encoder outputs differ by {rep.encoder_max_abs_diff:.3g} (> {atol:g})")
    for name, tally in tallies.items():
        if tally.logits_max_abs_diff > atol + rtol * rep.logits_max_abs:
            failures.append(f"{name} logits differ by {tally.logits_max_abs_diff:.3g} "
                            f"(> {atol:g} + {rtol:g}*{rep.logits_max_abs:.3g})")
        if tally.sequences_identical != rep.images:
            failures.append(f"{name}: greedy sequences identical for {tally.sequences_identical}/{rep.images} images "
                            f"(token agreement {tally.agree / max(1, tally.total):.4f})")
    return rep, failures
