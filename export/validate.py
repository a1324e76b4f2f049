"""Every export is validated against its source (Optimum's ``validate_model_outputs`` habit).

Structural checks (onnx checker with full check, strict shape inference, names and dynamic
axes against the spec, an ONNX Runtime session) and numeric parity against the PyTorch
model on real inputs. Failures are collected and raised together as one typed error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pvlm.data import normalize
from pvlm.model import PersonVLM
from runtime.backends.host_cache import HostCacheBackend
from runtime.bundle import ModelConfig
from runtime.verification import GraphParity, ParityReport  # the manifest's parity record, filled here

from .graphs import attribute_probabilities
from .spec import GraphSpec

log = logging.getLogger(__name__)

# Batch sizes for parity: singles and batches mixed, 32 images in all.
PARITY_BATCHES = (1, 4, 1, 8, 2, 16)


class ValidationError(RuntimeError):
    """An exported graph failed structural or numeric checks; ``failures`` lists each one."""

    def __init__(self, failures: list[str], report: dict[str, Any] | None = None):
        self.failures, self.report = failures, report or {}
        super().__init__("export validation failed: " + "; ".join(failures))


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
    """One decoder graph's running figures over the parity run."""

    logits_max_abs_diff: float = 0.0
    steps_compared: int = 0
    sequences_identical: int = 0
    agree: int = 0
    total: int = 0

    def result(self) -> GraphParity:
        return GraphParity(self.logits_max_abs_diff, self.steps_compared, self.sequences_identical,
                           self.agree / max(1, self.total))


@dataclass
class _Run:
    """Running figures of one parity run: the encoder's, the reference's, and each decoder graph's tally."""

    tallies: dict[str, _Tally]
    encoder_max_abs_diff: float = 0.0
    logits_max_abs: float = 0.0
    nonfinite: int = 0


class _PortableStep(HostCacheBackend):
    """``decoder.onnx`` through the runtime's own host-cache code (the cache written by slot)."""

    def __init__(self, session: Any, cfg: Any, ck: np.ndarray, cv: np.ndarray, capacity: int):
        super().__init__(ModelConfig.from_dict(cfg.to_dict()))
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


# One decoder graph on one batch: (tokens (B, 1), position) -> (logits (B, V), argmax ids (B,)).
Step = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
# Opens a Step on a batch's encoder outputs: (cross K, cross V, cache capacity) -> Step.
StepFactory = Callable[[np.ndarray, np.ndarray, int], Step]


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
    encoder, decoders = _open_sessions(model.cfg, encoder_path, decoder_path, ort_paths)
    pixels_all = parity_images(model, sum(batches), seed)
    run = _Run(tallies={name: _Tally() for name in decoders})
    start = 0
    for b in batches:
        pixels = pixels_all[start:start + b]
        start += b
        ref_k, ref_v, ck, cv = _compare_encoder(model, encoder, pixels, run)
        steps = {name: make(ck, cv, max_new_tokens) for name, make in decoders.items()}
        _compare_decoders(model, steps, ref_k, ref_v, b, max_new_tokens, run)
    rep = ParityReport(images=len(pixels_all), batch_sizes=tuple(batches),
                       encoder_max_abs_diff=run.encoder_max_abs_diff, logits_max_abs=run.logits_max_abs,
                       max_new_tokens=max_new_tokens, nonfinite=run.nonfinite,
                       decoders={name: tally.result() for name, tally in run.tallies.items()})
    return rep, parity_failures(rep, atol, rtol)


def _open_sessions(cfg: Any, encoder_path: Path, decoder_path: Path,
                   ort_paths: tuple[Path, Path] | None) -> tuple[Any, dict[str, StepFactory]]:
    """CPU sessions of the encoder and of each decoder graph, the latter as per-batch step factories."""
    import onnxruntime as ort

    from runtime.backends.ort_bound import BoundDecoder

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    cpu = ["CPUExecutionProvider"]
    enc = ort.InferenceSession(str(encoder_path), opts, providers=cpu)
    dec = ort.InferenceSession(str(decoder_path), opts, providers=cpu)
    decoders: dict[str, StepFactory] = {"decoder": lambda ck, cv, capacity: _PortableStep(dec, cfg, ck, cv, capacity)}
    if ort_paths is not None:
        cross, step = (ort.InferenceSession(str(p), opts, providers=cpu) for p in ort_paths)
        bound = BoundDecoder(ort, step, cross, ModelConfig.from_dict(cfg.to_dict()), "cpu")
        decoders["decoder_ort"] = lambda ck, cv, capacity: _BoundStep(bound, ck, cv, capacity)
    return enc, decoders


def _compare_encoder(model: PersonVLM, encoder: Any, pixels: np.ndarray,
                     run: _Run) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """The encoder graph's outputs against PyTorch's on one batch: cross K/V, and the attribute heads'
    probabilities where the graph has them (one more output, held to the same tolerance); returns
    (reference K, V, graph K, V)."""
    with torch.no_grad():
        visual = model.encode_image(torch.from_numpy(pixels))
        ref_k, ref_v = model.cross_kv(visual)
        refs = [ref_k.numpy(), ref_v.numpy()]
        if model.attribute_heads is not None:
            refs.append(attribute_probabilities(model, visual).numpy())
    outs = encoder.run(None, {"pixels": pixels})
    if len(outs) != len(refs):
        raise ValidationError([f"encoder graph has {len(outs)} outputs, the model gives {len(refs)}"])
    for got, ref in zip(outs, refs):
        run.nonfinite += int((~np.isfinite(got)).sum())
        run.encoder_max_abs_diff = max(run.encoder_max_abs_diff, float(np.abs(got - ref).max()))
    return ref_k, ref_v, outs[0], outs[1]


def _compare_decoders(model: PersonVLM, steps: dict[str, Step],
                      ref_k: torch.Tensor, ref_v: torch.Tensor, b: int, max_new_tokens: int, run: _Run) -> None:
    """Teacher-forced decoding of one batch: PyTorch's greedy tokens fed to every graph, step by step;
    each graph's logits and argmax are tallied against the reference's while a row is unfinished."""
    cfg = model.cfg
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
        run.logits_max_abs = max(run.logits_max_abs, float(np.abs(ref_logits[alive]).max(initial=0)))
        for name, step in steps.items():
            logits, ids = step(tokens, t)
            run.nonfinite += int((~np.isfinite(logits[alive])).sum())
            tally = run.tallies[name]
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
    for name, ok in row_ok.items():  # a row whose every step agreed: its greedy sequence is identical
        run.tallies[name].sequences_identical += int(ok.sum())


def parity_failures(rep: ParityReport, atol: float, rtol: float) -> list[str]:
    """The report against its tolerances, as failure lines (empty when every graph passes)."""
    failures = []
    if rep.encoder_max_abs_diff > atol:
        failures.append(f"encoder outputs differ by {rep.encoder_max_abs_diff:.3g} (> {atol:g})")
    for name, graph in rep.decoders.items():
        if graph.logits_max_abs_diff > atol + rtol * rep.logits_max_abs:
            failures.append(f"{name} logits differ by {graph.logits_max_abs_diff:.3g} "
                            f"(> {atol:g} + {rtol:g}*{rep.logits_max_abs:.3g})")
        if graph.sequences_identical != rep.images:
            failures.append(f"{name}: greedy sequences identical for {graph.sequences_identical}/{rep.images} images "
                            f"(token agreement {graph.token_agreement:.4f})")
    return failures
