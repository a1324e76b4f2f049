"""Backends whose per-batch buffers live in host numpy arrays: one implementation of encode/step/keep.

Subclasses only say how to run the two graphs (ONNX Runtime sessions, CoreML models, Triton BLS
requests) and what ``close`` frees; ``ort_bound.py``'s backend keeps its cache on the device instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..bundle import ModelConfig
from .base import BackendUnavailable, Lifecycle

DECODER_OUTPUTS = ["next_ids", "new_k", "new_v"]  # greedy: logits stay inside the decoder
LOGITS_OUTPUTS = ["logits", "new_k", "new_v"]  # beam search and sampling


@dataclass
class HostState:
    """One batch in flight."""

    cross_k: np.ndarray
    cross_v: np.ndarray
    cache_k: np.ndarray  # (L, B, H, capacity, Dh); slot t holds position t
    cache_v: np.ndarray
    attributes: np.ndarray | None = None  # the encoder's attribute-head probabilities (B, values), as encoded


class HostCacheBackend(Lifecycle):
    """The Backend protocol over two graph calls; the cache is written by slot, never copied whole."""

    name = "host-cache"

    def __init__(self, model: ModelConfig):
        """``model``: the bundle's model config (layers, heads, head width)."""
        self._cache_shape = (model.n_layers, model.n_heads, model.head_dim)

    def run_encoder(self, pixels: np.ndarray) -> tuple[np.ndarray, ...]:
        """float32 (B, 3, H, W) -> cross_k, cross_v[, attributes] (the last where the encoder has heads)."""
        raise NotImplementedError

    def run_decoder(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decoder-step feeds -> next_ids, new_k, new_v."""
        raise NotImplementedError

    def run_decoder_logits(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decoder-step feeds -> logits, new_k, new_v (backends that cannot give logits refuse)."""
        raise BackendUnavailable(f"the {self.name} backend returns only next ids; beam search and sampling "
                                 "need an onnxruntime backend")

    def encode(self, pixels: np.ndarray, capacity: int) -> HostState:
        """Run the encoder; zeroed cache of ``capacity`` slots."""
        cross_k, cross_v, *heads = self.run_encoder(pixels)
        state = self.start(cross_k, cross_v, capacity)
        state.attributes = heads[0] if heads else None
        return state

    def start(self, cross_k: np.ndarray, cross_v: np.ndarray, capacity: int) -> HostState:
        """State for a batch from the encoder's cross K/V (L, B, H, N, Dh); zeroed cache of ``capacity`` slots."""
        layers, heads, dh = self._cache_shape
        cache = np.zeros((layers, cross_k.shape[1], heads, capacity, dh), np.float32)
        return HostState(cross_k, cross_v, cache, np.zeros_like(cache))

    def step(self, state: HostState, tokens: np.ndarray, position: int) -> np.ndarray:
        """One step; stores this token's K/V at slot ``position``; next ids (B,) int64."""
        ids = self._run_step(self.run_decoder, state, tokens, position)
        return ids.astype(np.int64, copy=False)

    def step_logits(self, state: HostState, tokens: np.ndarray, position: int) -> np.ndarray:
        """One step like ``step``; returns the logits (B, vocab) float32."""
        return self._run_step(self.run_decoder_logits, state, tokens, position)

    def _run_step(self, run: Any, state: HostState, tokens: np.ndarray, position: int) -> np.ndarray:
        if position >= state.cache_k.shape[3]:
            raise ValueError(f"position {position} exceeds the cache capacity {state.cache_k.shape[3]}")
        positions = np.full((tokens.shape[0], 1), position, np.int64)
        out, nk, nv = run({
            "tokens": tokens, "positions": positions, "cross_k": state.cross_k, "cross_v": state.cross_v,
            "cache_k": state.cache_k, "cache_v": state.cache_v})
        state.cache_k[:, :, :, position] = nk[:, :, :, 0]
        state.cache_v[:, :, :, position] = nv[:, :, :, 0]
        return out

    def reorder(self, state: HostState, rows: np.ndarray, length: int) -> None:
        """Beam reorder in place: only the ``length`` written slots move; cross K/V are shared by an image's rows."""
        for cache in (state.cache_k, state.cache_v):
            cache[:, :, :, :length] = cache[:, rows, :, :length]  # the gather copies first: safe in place

    def keep(self, state: HostState, rows: np.ndarray) -> None:
        """Compact (or repeat) every per-row buffer to ``rows`` (finished rows stop costing decoder work)."""
        state.cross_k = np.ascontiguousarray(state.cross_k[:, rows])
        state.cross_v = np.ascontiguousarray(state.cross_v[:, rows])
        state.cache_k = np.ascontiguousarray(state.cache_k[:, rows])
        state.cache_v = np.ascontiguousarray(state.cache_v[:, rows])
