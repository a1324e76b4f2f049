"""pvlm.vocab: tokenisation, deterministic building, encode/decode, JSON formats (ours and the original's)."""

from __future__ import annotations

import builtins
import json
import random
from pathlib import Path

import pytest

from pvlm.vocab import SPECIALS, Vocabulary, tokenize

CAPTIONS = [
    "A man wearing a red t-shirt, walking.",
    "A woman's bag is black; she is walking.",
    "a man in a blue T-Shirt and jeans, standing",
    "The man carries a bag.",
    "A WOMAN wearing a red dress.",
]


def _original_format(tokens: list[str], min_freq: int = 5) -> dict:
    return {"token2id": {t: i for i, t in enumerate(tokens)}, "min_freq": min_freq}


# --------------------------------------------------------------------------- tokenize


def test_tokenize_lowercases_and_splits_punctuation() -> None:
    assert tokenize("A man wearing a red T-Shirt, walking.") == [
        "a", "man", "wearing", "a", "red", "t-shirt", ",", "walking", "."]
    assert tokenize("The woman's bag (black)!") == ["the", "woman's", "bag", "(", "black", ")", "!"]
    assert tokenize("  two\tspaces\n") == ["two", "spaces"]
    assert tokenize("3-4 people; 2 bags") == ["3-4", "people", ";", "2", "bags"]
    assert tokenize("") == []


def test_tokenize_trailing_hyphen_and_apostrophe_split_off() -> None:
    assert tokenize("well- dressed") == ["well", "-", "dressed"]
    assert tokenize("'quoted'") == ["'", "quoted", "'"]


# --------------------------------------------------------------------------- build


def test_build_specials_first_and_frequency_order() -> None:
    vocab = Vocabulary.build(CAPTIONS, min_freq=1)
    assert tuple(vocab.itos[:4]) == SPECIALS
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2, 3)
    assert vocab.itos[4] == "a"  # most frequent token
    counts: dict[str, int] = {}
    for c in CAPTIONS:
        for t in tokenize(c):
            counts[t] = counts.get(t, 0) + 1
    body = vocab.itos[4:]
    assert set(body) == set(counts)
    assert body == sorted(body, key=lambda t: (-counts[t], t))  # ties alphabetical


def test_build_min_freq_and_max_size() -> None:
    vocab = Vocabulary.build(CAPTIONS, min_freq=2)
    assert vocab.min_freq == 2
    assert "man" in vocab.stoi and "bag" in vocab.stoi  # 3 and 2 occurrences
    assert "jeans" not in vocab.stoi and "dress" not in vocab.stoi  # once each
    small = Vocabulary.build(CAPTIONS, min_freq=1, max_size=7)
    assert len(small) == 7
    assert small.itos == Vocabulary.build(CAPTIONS, min_freq=1).itos[:7]
    with pytest.raises(ValueError):
        Vocabulary.build(CAPTIONS, max_size=4)


def test_build_ties_alphabetical_and_order_independent() -> None:
    caps = ["zebra apple mango", "mango zebra apple"]
    vocab = Vocabulary.build(caps, min_freq=1)
    assert vocab.itos[4:] == ["apple", "mango", "zebra"]
    again = Vocabulary.build(list(CAPTIONS), min_freq=1)
    shuffled = list(CAPTIONS)
    random.Random(3).shuffle(shuffled)
    assert shuffled != CAPTIONS
    assert Vocabulary.build(CAPTIONS, min_freq=1) == again == Vocabulary.build(shuffled, min_freq=1)
    assert Vocabulary.build(iter(CAPTIONS), min_freq=1) == again  # any iterable


def test_build_never_duplicates_special_strings() -> None:
    vocab = Vocabulary.build(["<pad> <unk> man"] * 3, min_freq=1)
    assert len(set(vocab.itos)) == len(vocab)
    assert tuple(vocab.itos[:4]) == SPECIALS


# --------------------------------------------------------------------------- encode / decode


def test_encode_decode_round_trip() -> None:
    vocab = Vocabulary.build(CAPTIONS, min_freq=1)
    text = "a man wearing a red t-shirt, walking."
    ids = vocab.encode(text)
    assert ids[0] == vocab.bos_id and ids[-1] == vocab.eos_id
    assert vocab.unk_id not in ids
    assert vocab.decode(ids) == text
    assert vocab.decode(vocab.encode("A Man wearing a RED T-shirt , walking .")) == text
    assert vocab.encode(text, add_special=False) == ids[1:-1]
    assert vocab.decode(vocab.encode("a woman's bag is black; she is walking.")) == "a woman's bag is black; she is walking."


def test_unknown_words_map_to_unk() -> None:
    vocab = Vocabulary.build(CAPTIONS, min_freq=1)
    ids = vocab.encode("a purple giraffe", add_special=False)
    assert ids == [vocab.stoi["a"], vocab.unk_id, vocab.unk_id]
    assert vocab.decode(ids, skip_special=False) == "a <unk> <unk>"
    assert vocab.decode(ids) == "a"  # specials skipped by default


def test_decode_stops_at_eos_and_handles_out_of_range() -> None:
    vocab = Vocabulary.build(CAPTIONS, min_freq=1)
    man, bag = vocab.stoi["man"], vocab.stoi["bag"]
    assert vocab.decode([vocab.bos_id, man, vocab.eos_id, bag]) == "man"
    assert vocab.decode([man, vocab.pad_id, bag]) == "man bag"
    assert vocab.decode([man, 10_000]) == "man <unk>"
    assert vocab.decode([vocab.bos_id, man, vocab.eos_id], skip_special=False) == "<bos> man <eos>"


# --------------------------------------------------------------------------- JSON


def test_save_load_round_trip(tmp_path: Path) -> None:
    vocab = Vocabulary.build(CAPTIONS, min_freq=2)
    path = tmp_path / "vocab.json"
    vocab.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.json"]  # atomic: no temp file left
    back = Vocabulary.load(path)
    assert back == vocab and back.itos == vocab.itos and back.min_freq == 2
    d = json.loads(path.read_text())
    assert d["format"] == "pvlm-vocab" and d["tokens"] == vocab.itos
    assert Vocabulary.from_dict(vocab.to_dict()) == vocab


def test_loads_original_repository_format(tmp_path: Path) -> None:
    tokens = list(SPECIALS) + ["man", "woman", "a", "wearing", "t-shirt", ",", "."]
    d = _original_format(tokens)
    # the original file's key order need not follow the ids
    d["token2id"] = dict(sorted(d["token2id"].items()))
    path = tmp_path / "vocabulary.json"
    path.write_text(json.dumps(d))
    vocab = Vocabulary.load(path)
    assert vocab.itos == tokens
    assert vocab.min_freq == 5
    assert vocab.encode("A man wearing a T-shirt.") == [1, 6, 4, 7, 6, 8, 10, 2]
    assert vocab.decode([1, 5, 7, 8, 9, 2]) == "woman wearing t-shirt,"


def _ascii_locale_open(file, mode="r", *args, encoding=None, **kwargs):
    """``open`` as on a machine whose locale encoding is ASCII (what a bare ``open(path)`` would use there)."""
    if "b" not in mode and encoding is None:
        encoding = "ascii"
    return builtins.open(file, mode, *args, encoding=encoding, **kwargs)


def test_non_ascii_tokens_round_trip_under_any_locale(tmp_path: Path, monkeypatch) -> None:
    """Original-format files may hold raw UTF-8 (ensure_ascii=False); read them whatever the locale."""
    import pvlm.vocab

    tokens = list(SPECIALS) + ["café", "naïve", "—"]
    path = tmp_path / "vocabulary.json"
    path.write_text(json.dumps(_original_format(tokens), ensure_ascii=False), encoding="utf-8")
    monkeypatch.setattr(pvlm.vocab, "open", _ascii_locale_open, raising=False)
    assert Vocabulary.load(path).itos == tokens
    saved = tmp_path / "ours.json"
    Vocabulary(tokens).save(saved)
    assert Vocabulary.load(saved).itos == tokens


@pytest.mark.parametrize(
    "d",
    [
        {"token2id": {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3, "man": 5}},
        {"token2id": {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3, "man": 3}},
        {"token2id": {"<pad>": 1, "<bos>": 0, "<eos>": 2, "<unk>": 3, "man": 4}},
        {"token2id": {"man": 0, "<pad>": 1, "<bos>": 2, "<eos>": 3, "<unk>": 4}},
        {"tokens": ["man", "<pad>", "<bos>", "<eos>", "<unk>"]},
        {"tokens": ["<pad>", "<bos>", "<eos>"]},
        {"tokens": ["<pad>", "<bos>", "<eos>", "<unk>", "man", "man"]},
        {"words": ["<pad>", "<bos>", "<eos>", "<unk>"]},
    ],
    ids=["gap", "duplicate-id", "specials-swapped", "specials-not-first", "tokens-not-first",
         "too-short", "duplicate-token", "no-known-key"],
)
def test_invalid_vocabularies_raise(d: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Vocabulary.from_dict(d)
    path = tmp_path / "v.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError):
        Vocabulary.load(path)


@pytest.mark.parametrize(
    "content",
    [None, b"{not json", b"\xff\xfe\x00garbage", b"", b"42", b'"tokens"', b"[1, 2]", b'{"tokens": 5}',
     b'{"token2id": [1, 2]}'],
    ids=["missing", "bad-json", "binary", "empty", "number", "string", "list", "tokens-int", "token2id-list"],
)
def test_unreadable_file_raises_value_error(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "vocab.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError):
        Vocabulary.load(path)


def test_directory_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read vocabulary"):
        Vocabulary.load(tmp_path)
