"""The servers' per-request decoding parameters and the guard's cut of an unguarded greedy sequence (torch-free)."""

from __future__ import annotations

import pytest

from runtime.decoding import (
    DEFAULT_NO_REPEAT_NGRAM,
    DecodingOptions,
    banned_tokens,
    cut_at_repeat,
    decoding_from_parameters,
)


def test_no_parameters_keep_the_servers_decoding():
    base = DecodingOptions(beams=2)
    assert decoding_from_parameters({}, base) is base and decoding_from_parameters(None) == DecodingOptions()
    assert decoding_from_parameters({"priority": 3, "timeout": 10}, base) is base  # Triton's own keys are ignored


def test_fields_labels_and_string_values():
    assert decoding_from_parameters({"beams": 3, "n_best": "2"}) == DecodingOptions(beams=3, n_best=2)
    got = decoding_from_parameters({"decoding": "original", "seed": "7", "n_best": 2})
    assert (got.label, got.seed, got.n_best, got.no_repeat_ngram_size) == ("original", 7, 2, DEFAULT_NO_REPEAT_NGRAM)
    assert decoding_from_parameters({"sample": "true", "top_p": "0.9"}).top_p == 0.9
    assert decoding_from_parameters({"no_repeat_ngram_size": 0}, DecodingOptions(beams=2)).beams == 2


@pytest.mark.parametrize("params, msg", [
    ({"beams": 0}, "beams must be an integer >= 1, got 0"),
    ({"beams": "three"}, "parameter beams: expected int, got 'three'"),
    ({"beams": 2.5}, "parameter beams: expected an integer, got 2.5"),
    ({"sample": "yes"}, "parameter sample: expected true or false"),
    ({"sample": True, "top_p": "1.5"}, "top_p must be in (0, 1], got 1.5"),
    ({"decoding": "beam"}, "decoding must be greedy, sample, original or beamsN"),
    ({"beams": 17}, "at most 16 per request"),
])
def test_bad_parameters_are_one_line(params, msg):
    with pytest.raises(ValueError) as e:
        decoding_from_parameters(params)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_cut_at_repeat_is_where_the_greedy_guard_ends_a_row():
    loop = [5, 6, 7, 8] * 6
    cut = cut_at_repeat(loop, 10)
    assert cut == loop[:13]  # a 4-token loop ends after 13 tokens
    assert not any(cut[j] in banned_tokens(cut[:j], 10) for j in range(len(cut)))
    assert cut_at_repeat(loop, 0) == loop and cut_at_repeat([1, 2, 3], 2) == [1, 2, 3]
