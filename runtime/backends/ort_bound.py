"""ONNX Runtime on ``decoder_ort.onnx``: the KV cache stays where the session runs (IO binding).

Each layer's cache is one OrtValue of shape (B, H, capacity, Dh) on the session's device,
bound both as the ``past_*`` input and the ``present_*`` output: the fused attention kernel
appends each token's K/V in place, so a step moves only the token ids in and the next ids
out. Once per batch, ``cross_ort.onnx`` turns the encoder's cross K/V into the step's
cross-attention tables, which stay on the device. Dropping finished rows (at most once per
row) compacts the buffers through the host.

The token ids and positions are bound again on every step: ONNX Runtime copies a bound input
to the device of the node that reads it when it is bound (``IOBinding::BindInput``), so an
input bound once and rewritten in place afterwards would be read as its first value on CUDA
(on CPU no copy is made, which hides the difference).

On CUDA the shared past/present buffer runs ONNX Runtime's fused decoder kernel only in FP16,
for head sizes 32, 64 and 128 and a past longer than 0 (not at step 0); every other step takes
the unfused attention path over the shared buffer, which no run has checked yet.
:func:`bound_cache_verified` says where the runtime's ``auto`` choice may take this path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..bundle import ModelConfig

# Older ONNX Runtime CPU kernels ignore past_sequence_length and write one slot past the shared
# buffer (heap corruption, seen with 1.30.0); 1.31.1 and 1.32.0 append in place as specified.
MIN_ONNXRUNTIME = (1, 31)
# Devices where decoder_ort with the shared cache buffer has matched PyTorch in a recorded run
# (the export's parity check runs it on CPU). CUDA joins once ``python -m bench.gpu_check`` passes there.
VERIFIED_DEVICES = ("cpu",)
DMMHA_HEAD_SIZES = (32, 64, 128)  # ONNX Runtime's fused CUDA decoder kernel (DecoderMaskedMultiHeadAttention)


def supports_bound_cache(version: str) -> bool:
    """True when this ONNX Runtime version runs ``decoder_ort.onnx`` correctly."""
    m = re.match(r"(\d+)\.(\d+)", version)
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= MIN_ONNXRUNTIME


def bound_cache_verified(device: str) -> bool:
    """True when ``decoder_ort`` with the shared cache buffer is verified on ``device`` (cpu, cuda).

    The runtime's ``auto`` decoder choice takes the portable ``decoder.onnx`` elsewhere;
    ``decoder="ort"`` still asks for this path (the GPU check does, to verify it).
    """
    return device in VERIFIED_DEVICES


def cuda_kernel_notes(head_dim: int, fp16: bool = False) -> list[str]:
    """The steps ONNX Runtime's fused CUDA decoder kernel does not take, for this head size and precision.

    ``decoder_ort`` is FP32 today, and that kernel runs only on FP16, so every step takes the
    unfused MultiHeadAttention path over the shared buffer.
    """
    if not fp16:
        return ["FP32: the fused decoder kernel runs only on FP16; every step takes the unfused path on the "
                "shared buffer"]
    notes = ["step 0 (no past) takes the unfused path on the shared buffer"]
    if head_dim not in DMMHA_HEAD_SIZES:
        notes.append(f"head size {head_dim} is not one of {DMMHA_HEAD_SIZES}: every step takes the unfused path")
    return notes


@dataclass
class BoundState:
    """One batch in flight: its device buffers and the binding that names them."""

    binding: Any
    capacity: int
    cross: dict[str, Any]  # cross-attention tables by input name (cross_qk_0, ...), OrtValues
    cache: list[Any]  # per layer: K, V OrtValues (B, H, capacity, Dh), past == present
    next_ids: np.ndarray  # host buffer the session writes the step's ids into
    logits: Any  # device OrtValue (bound so the session does not allocate one per step)
    hold: list[Any] = field(default_factory=list)  # host arrays CPU OrtValues share memory with
    tokens: np.ndarray = field(default_factory=lambda: np.zeros((0, 1), np.int64))  # host side, bound every step
    positions: np.ndarray = field(default_factory=lambda: np.zeros((0, 1), np.int64))
    indirection: Any = None  # all-zero (B, 1, capacity) int32 on the device: greedy is beam width 1
    attributes: np.ndarray | None = None  # the encoder's attribute-head probabilities (B, values), as encoded


class BoundDecoder:
    """Runs one decoder step after another on device-resident buffers; one per backend, many states."""

    def __init__(self, ort: Any, session: Any, cross_session: Any, model: ModelConfig, device: str):
        """Sessions of ``decoder_ort`` and ``cross_ort``; ``model``: the manifest's model config;
        ``device``: where the sessions run (cpu, cuda)."""
        self._ort, self.session, self.cross_session, self.device = ort, session, cross_session, device
        self.cross_names = [o.name for o in cross_session.get_outputs()]
        self.layers, self.heads, self.head_dim = model.n_layers, model.n_heads, model.head_dim
        self.vocab = model.vocab_size

    def _upload(self, arr: np.ndarray, hold: list[Any]) -> Any:
        """Host array -> OrtValue on the session's device (on CPU it shares ``arr``'s memory)."""
        arr = np.ascontiguousarray(arr)
        if self.device == "cpu":  # elsewhere the OrtValue holds its own device copy
            hold.append(arr)
        return self._ort.OrtValue.ortvalue_from_numpy(arr, self.device, 0)

    def start(self, cross_k: np.ndarray, cross_v: np.ndarray, capacity: int) -> BoundState:
        """State for a batch: cross tables from cross K/V (L, B, H, N, Dh) and an empty cache of ``capacity`` slots."""
        hold: list[Any] = []
        batch = cross_k.shape[1]
        io = self.cross_session.io_binding()
        io.bind_cpu_input("cross_k", np.ascontiguousarray(cross_k, np.float32))
        io.bind_cpu_input("cross_v", np.ascontiguousarray(cross_v, np.float32))
        for name in self.cross_names:
            io.bind_output(name, self.device)
        self.cross_session.run_with_iobinding(io)
        cross = dict(zip(self.cross_names, io.get_outputs()))
        shape = (batch, self.heads, capacity, self.head_dim)
        cache = [self._upload(np.zeros(shape, np.float32), hold) for _ in range(2 * self.layers)]
        return self._bind(BoundState(None, capacity, cross, cache, np.zeros(batch, np.int64), None, hold))

    def _bind(self, state: BoundState) -> BoundState:
        ort, batch = self._ort, state.next_ids.shape[0]
        io = self.session.io_binding()
        for name, value in state.cross.items():
            io.bind_ortvalue_input(name, value)
        for i in range(self.layers):
            for j, kv in enumerate("kv"):
                buf = state.cache[2 * i + j]
                io.bind_ortvalue_input(f"past_{kv}_{i}", buf)
                io.bind_ortvalue_output(f"present_{kv}_{i}", buf)  # same buffer: appended in place
        state.logits = ort.OrtValue.ortvalue_from_shape_and_type((batch, self.vocab), np.float32, self.device, 0)
        io.bind_ortvalue_output("logits", state.logits)
        ids = state.next_ids
        io.bind_output("next_ids", "cpu", 0, np.int64, list(ids.shape), ids.ctypes.data)
        state.indirection = self._upload(np.zeros((batch, 1, state.capacity), np.int32), state.hold)
        io.bind_ortvalue_input("cache_indirection", state.indirection)
        state.tokens, state.positions = np.zeros((batch, 1), np.int64), np.zeros((batch, 1), np.int64)
        state.binding = io
        return state

    def step(self, state: BoundState, tokens: np.ndarray, position: int) -> np.ndarray:
        """Run one step; this token's K/V land in slot ``position``; returns next ids (B,) int64 (a copy)."""
        if position >= state.capacity:
            raise ValueError(f"position {position} exceeds the cache capacity {state.capacity}")
        state.tokens[:] = tokens
        state.positions.fill(position)
        io = state.binding
        io.bind_cpu_input("tokens", state.tokens)  # copied to the reading node's device now, so every step
        io.bind_cpu_input("positions", state.positions)
        self.session.run_with_iobinding(io)
        return state.next_ids.copy()

    def logits(self, state: BoundState) -> np.ndarray:
        """The last step's logits (B, vocab) on the host (validation; the greedy loop never needs them)."""
        return state.logits.numpy()

    def cache(self, state: BoundState) -> tuple[np.ndarray, np.ndarray]:
        """The cache as host arrays (L, B, H, capacity, Dh) for K and V (tests, validation)."""
        host = [v.numpy() for v in state.cache]
        return np.stack(host[0::2]), np.stack(host[1::2])

    def reorder(self, state: BoundState, rows: np.ndarray, length: int) -> None:
        """Row i's slots ``[0, length)`` become row ``rows[i]``'s, in the same buffers (bindings stay valid).

        On CPU the OrtValues share memory with host arrays, gathered in place; elsewhere each buffer
        goes through the host once (``update_inplace`` writes it back into the same device memory).
        """
        if self.device == "cpu":
            for buf in state.hold[:len(state.cache)]:  # the cache arrays come first in ``hold``
                buf[:, :, :length] = buf[rows, :, :length]
            return
        for value in state.cache:
            value.update_inplace(np.ascontiguousarray(value.numpy()[rows]))

    def keep(self, state: BoundState, rows: np.ndarray) -> None:
        """Keep only ``rows`` of every buffer (host round trip; happens at most once per finished row)."""
        hold: list[Any] = []
        state.cache = [self._upload(v.numpy()[rows], hold) for v in state.cache]  # first in ``hold``: see reorder
        state.cross = {name: self._upload(v.numpy()[rows], hold) for name, v in state.cross.items()}
        state.hold, state.next_ids = hold, np.zeros(len(rows), np.int64)
        self._bind(state)
