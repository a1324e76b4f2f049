"""pvlm.generate: cached vs naive greedy decoding, eos/pad handling, trim, argument checks."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from pvlm import generate, trim  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pixels(model, batch: int, seed: int) -> torch.Tensor:
    h, w = model.cfg.image_size
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


class _EosAt:
    """Delegates to a real model but forces ``<eos>`` as row i's greedy choice at step ``stops[i]``.

    Both decoding paths go through it (decode_step sees the position, decode_full the prefix length),
    so rows finish at different lengths deterministically.
    """

    def __init__(self, model, stops: list[int]):
        self.model, self.cfg, self.stops = model, model.cfg, torch.tensor(stops)

    def __getattr__(self, name):
        return getattr(self.model, name)

    def _force(self, logits: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        logits = logits.clone()
        logits[:, self.cfg.eos_id] = torch.where(step == self.stops, 1e4, -1e4)
        return logits

    def decode_step(self, tokens, positions, cross_k, cross_v, cache_k, cache_v):
        logits, k, v = self.model.decode_step(tokens, positions, cross_k, cross_v, cache_k, cache_v)
        return self._force(logits, positions[:, 0]), k, v

    def decode_full(self, input_ids, cross_k, cross_v):
        logits = self.model.decode_full(input_ids, cross_k, cross_v)
        step = torch.full((input_ids.shape[0],), input_ids.shape[1] - 1)
        out = logits.clone()
        out[:, -1] = self._force(logits[:, -1], step)
        return out


def _assert_pad_after_eos(out: torch.Tensor, eos: int, pad: int) -> None:
    for row in out.tolist():
        if eos in row:
            first = row.index(eos)
            assert all(t == pad for t in row[first + 1 :]), row


@pytest.mark.parametrize("batch", [1, 3])
def test_cached_equals_uncached(tiny_model, batch: int) -> None:
    pixels = _pixels(tiny_model, batch, seed=batch)
    a = generate(tiny_model, pixels, 16, use_cache=True)
    b = generate(tiny_model, pixels, 16, use_cache=False)
    assert a.dtype == torch.long and a.shape[0] == batch and 1 <= a.shape[1] <= 16
    assert torch.equal(a, b)
    assert int(a.min()) >= 0 and int(a.max()) < tiny_model.cfg.vocab_size
    _assert_pad_after_eos(a, tiny_model.cfg.eos_id, tiny_model.cfg.pad_id)


@pytest.mark.parametrize("batch", [1, 3])
def test_no_stop_at_eos_gives_exactly_max_new_tokens(tiny_model, batch: int) -> None:
    pixels = _pixels(tiny_model, batch, seed=10 + batch)
    a = generate(tiny_model, pixels, 11, use_cache=True, stop_at_eos=False)
    b = generate(tiny_model, pixels, 11, use_cache=False, stop_at_eos=False)
    assert a.shape == (batch, 11)
    assert torch.equal(a, b)


def test_greedy_matches_manual_argmax_of_full_prefix(tiny_model) -> None:
    """Independent check of the uncached path: re-run forward on the growing prefix."""
    pixels = _pixels(tiny_model, 2, seed=5)
    out = generate(tiny_model, pixels, 6, use_cache=True, stop_at_eos=False)
    seq = torch.full((2, 1), tiny_model.cfg.bos_id)
    with torch.no_grad():
        for _ in range(6):
            seq = torch.cat([seq, tiny_model(pixels, seq)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, seq[:, 1:])


@pytest.mark.parametrize("use_cache", [True, False])
def test_rows_finishing_early_are_padded(tiny_model, use_cache: bool) -> None:
    cfg = tiny_model.cfg
    stops = [1, 4, 2]
    forced = _EosAt(tiny_model, stops)
    pixels = _pixels(tiny_model, 3, seed=7)
    out = generate(forced, pixels, 20, use_cache=use_cache)
    assert out.shape == (3, max(stops) + 1)  # stops as soon as every row has finished
    for row, stop in zip(out.tolist(), stops):
        assert row[stop] == cfg.eos_id
        assert cfg.eos_id not in row[:stop] and cfg.pad_id not in row[:stop]
        assert row[stop + 1 :] == [cfg.pad_id] * (len(row) - stop - 1)
    _assert_pad_after_eos(out, cfg.eos_id, cfg.pad_id)
    assert [len(trim(r, cfg.eos_id)) for r in out] == stops


def test_forced_rows_same_with_and_without_cache(tiny_model) -> None:
    forced = _EosAt(tiny_model, [3, 0, 5])
    pixels = _pixels(tiny_model, 3, seed=8)
    assert torch.equal(generate(forced, pixels, 12, use_cache=True), generate(forced, pixels, 12, use_cache=False))
    full = generate(forced, pixels, 12, use_cache=True, stop_at_eos=False)
    assert full.shape == (3, 12)


def test_trim() -> None:
    assert trim([5, 6, 2, 0, 0]) == [5, 6]
    assert trim(torch.tensor([2, 7, 8])) == []
    assert trim([4, 5, 6]) == [4, 5, 6]
    assert trim([4, 9, 5, 2], eos_id=9) == [4]
    assert all(isinstance(i, int) for i in trim(torch.tensor([4, 5, 2])))


@pytest.mark.parametrize("n", [0, -3, 65])
def test_invalid_max_new_tokens(tiny_model, n: int) -> None:
    assert tiny_model.cfg.max_len == 64
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(tiny_model, _pixels(tiny_model, 1, seed=0), n)


def test_max_new_tokens_up_to_max_len(tiny_model) -> None:
    out = generate(tiny_model, _pixels(tiny_model, 1, seed=3), tiny_model.cfg.max_len, stop_at_eos=False)
    assert out.shape == (1, tiny_model.cfg.max_len)


@pytest.mark.parametrize("stop_at_eos", [True, False])
def test_like_original_loop_equals_greedy(tiny_model, stop_at_eos: bool) -> None:
    """The original repository's per-step work (cross K/V re-projected, top-k/top-p filters) picks greedy tokens."""
    from pvlm.reference import decode_like_original

    forced = _EosAt(tiny_model, [2, 5, 9])
    pixels = _pixels(tiny_model, 3, seed=21)
    with torch.no_grad():
        visual = tiny_model.encode_image(pixels)
    got = decode_like_original(forced, visual, 12, stop_at_eos=stop_at_eos)
    assert torch.equal(got, generate(forced, pixels, 12, use_cache=True, stop_at_eos=stop_at_eos))
    assert got.shape == ((3, 10) if stop_at_eos else (3, 12))


def test_like_original_loop_reprojects_cross_kv_every_step(tiny_model) -> None:
    """The work it times is the original's: cross_kv runs once per generated token, not once per image."""
    from pvlm.reference import decode_like_original

    calls = []

    class Counting(_EosAt):
        def cross_kv(self, visual):
            calls.append(visual.shape)
            return self.model.cross_kv(visual)

    with torch.no_grad():
        visual = tiny_model.encode_image(_pixels(tiny_model, 2, seed=3))
    decode_like_original(Counting(tiny_model, [99, 99]), visual, 7, stop_at_eos=False)
    assert len(calls) == 7
