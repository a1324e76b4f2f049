"""Calibrating the attribute heads at export: one temperature per field, fitted on held-out labelled crops.

The held-out crops are the validation split the checkpoint was trained with (read back from the
checkpoint's ``train_config``), or any JSONL with ``attributes`` labels (``pvlm-export onnx
--calibration-data``). The probabilities are the PyTorch model's (the exported graph's equal them within
the parity tolerance); fitting and ECE are :mod:`runtime.calibration`'s.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pvlm.attribute_targets import IGNORE, attribute_targets
from pvlm.data import Record, load_jsonl, preprocess
from pvlm.model import PersonVLM
from runtime.bundle import AttributeHeads
from runtime.calibration import DEFAULT_BINS, calibration_summary, fit_temperature

from .graphs import attribute_probabilities

log = logging.getLogger(__name__)

MAX_CALIBRATION_IMAGES = 5000  # a temperature is one number: a few thousand crops pin it down


def held_out_records(meta: Mapping[str, Any], data: str | Path | None) -> tuple[list[Record], str]:
    """The labelled crops to calibrate on and where they came from: ``data`` if given, else the validation split
    of the checkpoint's training run. ``([], reason)`` when neither can be read."""
    if data is not None:
        return load_jsonl(data), str(data)
    try:
        from pvlm.train import (  # the training run's own split rule
            TrainConfig,
            _split_records,
        )

        cfg = TrainConfig(**json.loads(meta["train_config"]))
        where = cfg.val or f"the {cfg.val_fraction:g} of {cfg.train} held out for validation"
        return _split_records(cfg)[1], f"validation split: {where}"
    except (KeyError, TypeError, ValueError, OSError) as e:
        return [], f"no held-out data: the checkpoint's validation split cannot be read ({e})"


def head_probabilities(model: PersonVLM, records: Sequence[Record], batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The heads' uncalibrated probabilities (N, values) and each field's target index (N, fields; IGNORE where
    the record has no label), for ``records`` preprocessed as the runtime does."""
    from PIL import Image

    probs, targets = [], []
    model = model.eval()
    for start in range(0, len(records), batch):
        chunk = records[start:start + batch]
        pixels = []
        for r in chunk:
            with Image.open(r.image) as im:
                pixels.append(preprocess(im, model.cfg))
        with torch.no_grad():
            probs.append(attribute_probabilities(model, model.encode_image(torch.stack(pixels))).numpy())
        targets += [attribute_targets(r.attributes) for r in chunk]
    return np.concatenate(probs), np.asarray(targets, np.int64)


def calibrate_heads(model: PersonVLM, heads: AttributeHeads, records: Sequence[Record], source: str,
                    bins: int = DEFAULT_BINS) -> AttributeHeads:
    """``heads`` with each field's temperature fitted on ``records`` (NLL) and the figures before and after
    (ECE over ``bins`` bins, NLL, reliability) recorded as its ``calibration``."""
    records = list(records)[:MAX_CALIBRATION_IMAGES]
    if not records:
        return heads.with_temperatures({}, {"source": source, "images": 0, "bins": bins, "fields": {}})
    probs, targets = head_probabilities(model, records)
    temperatures, fields = {}, {}
    for i, f in enumerate(heads.fields):
        labelled = targets[:, i] != IGNORE
        p, t = probs[labelled, f.offset:f.offset + len(f.values)], targets[labelled, i]
        temperatures[f.name] = fit_temperature(p, t)
        fields[f.name] = calibration_summary(p, t, temperatures[f.name], bins)
    log.info("calibrated %d attribute fields on %d held-out crops (%s)", len(fields), len(records), source)
    return heads.with_temperatures(temperatures, {"source": source, "images": len(records), "bins": bins,
                                                  "method": "temperature scaling (NLL)", "fields": fields})


def calibration_lines(calibration: Mapping[str, Any]) -> list[str]:
    """The export report's lines: per field n, temperature and ECE before -> after."""
    fields = calibration.get("fields") or {}
    if not fields:
        return [f"attribute heads: not calibrated ({calibration.get('source', 'no held-out data')})"]
    lines = [(f"attribute heads calibrated on {calibration['images']} crops ({calibration['source']}); "
             f"ECE over {calibration['bins']} bins, before -> after")]
    for name, f in fields.items():
        if not f["n"]:
            lines.append(f"  {name:<12} no labels")
            continue
        lines.append(f"  {name:<12} n={f['n']:<5} T={f['temperature']:<7.3f} accuracy {f['accuracy']:.1%}  "
                     f"ECE {f['ece_before']:.4f} -> {f['ece_after']:.4f}")
    return lines


__all__ = ["MAX_CALIBRATION_IMAGES", "calibrate_heads", "calibration_lines", "head_probabilities", "held_out_records"]
