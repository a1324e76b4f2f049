"""``runtime.attribute_schema``: one table the parser, the synthetic captions, eval and the JSON Schema agree on."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from runtime.attribute_schema import (
    AGE_WORDS,
    ATTRIBUTE_KEYS,
    COLOR_WORDS,
    COLORED_PARTS,
    COLORS,
    FIELD,
    FIELDS,
    GENDER_WORDS,
    NOUN_WORDS,
    POSTURE_WORDS,
    SHADE_WORDS,
    SHADES,
    empty_attributes,
)
from runtime.attributes import parse_attributes
from runtime.description_schema import description_schema


def test_fields_are_consistent() -> None:
    assert len(set(ATTRIBUTE_KEYS)) == len(ATTRIBUTE_KEYS) == len(FIELDS)
    for f in FIELDS:
        assert set(f.drawn) - {"none"} <= set(f.values), f.key
        assert len(set(f.drawn)) == len(f.drawn), f.key
        if f.kind in ("color", "shade"):
            assert f.part and f.key == f"{f.part}_{f.kind}"
    assert COLORED_PARTS == ("upper", "lower", "shoes")
    assert {base for base, _ in COLOR_WORDS.values()} == set(COLORS)
    assert {shade for _, shade in COLOR_WORDS.values()} - {None} <= set(SHADES) == set(SHADE_WORDS)
    assert empty_attributes() == {k: ([] if k == "carrying" else None) for k in ATTRIBUTE_KEYS}


@pytest.mark.parametrize("table", [NOUN_WORDS[c] for c in NOUN_WORDS] + [POSTURE_WORDS, GENDER_WORDS, AGE_WORDS])
def test_a_word_names_one_value_per_table(table) -> None:
    seen: dict[str, str] = {}
    for value, words in table.items():
        for w in words:
            assert seen.setdefault(w, value) == value, f"{w!r} names both {seen[w]!r} and {value!r}"


def test_parser_reads_every_word_of_the_schema() -> None:
    """Each word of the lexicon gives its value, in a plain sentence."""
    for cat, values in NOUN_WORDS.items():
        for value, words in values.items():
            for w in words:
                if cat == "carrying":
                    if w == "mobile":
                        continue  # "mobile" is a phone only as "mobile phone" (covered by the parser tests)
                    assert parse_attributes(f"a person carrying a {w}.")["carrying"] == [value], w
                elif cat == "shoes":
                    assert parse_attributes(f"a person in red {w}.")["shoes_color"] == "red", w
                else:
                    assert parse_attributes(f"a person wearing a {w}.")[cat] == value, w
    for word, (base, shade) in COLOR_WORDS.items():
        got = parse_attributes(f"a person in a {word} jacket.")
        assert (got["upper_color"], got["upper_shade"]) == (base, shade), word
    for shade, words in SHADE_WORDS.items():
        for w in words:
            got = parse_attributes(f"a person in a {w} blue jacket.")
            assert (got["upper_color"], got["upper_shade"]) == ("blue", shade), w
    for posture, words in POSTURE_WORDS.items():
        for w in words:
            assert parse_attributes(f"the person {w}.")["posture"] == posture, w
    for key, table in (("gender", GENDER_WORDS), ("age", AGE_WORDS)):
        for value, words in table.items():
            for w in words:
                assert parse_attributes(f"the {w} in a coat.")[key] == value, w


def test_synth_draws_from_the_schema_and_writes_its_words() -> None:
    """The caption templates and the parser are two sides of one vocabulary."""
    from pvlm import synth

    assert {k: FIELD[k].drawn for k in synth.ATTRIBUTE_VALUES} == synth.ATTRIBUTE_VALUES
    assert set(synth.ATTRIBUTE_VALUES) == {f.key for f in FIELDS if f.drawn}
    assert set(synth.COLOR_RGB) == set(COLORS)
    for cat, phrases in (("upper", synth._UPPER_WORDS), ("lower", synth._LOWER_WORDS),
                         ("headwear", synth._HEADWEAR_WORDS), ("carrying", synth._CARRY_WORDS)):
        assert set(phrases) == set(FIELD[cat].drawn) - {"none"}, cat
        for value, options in phrases.items():
            for phrase in options:  # the head noun is last: "wide-brimmed hat", "mobile phone"
                assert phrase.split()[-1] in NOUN_WORDS[cat][value], (cat, value, phrase)
    for (gender, age), options in synth._PERSON_WORDS.items():
        for phrase in options:
            words = phrase.replace("-", " ").split() + [phrase.split()[0]]
            assert any(w in GENDER_WORDS[gender] for w in words) and any(w in AGE_WORDS[age] for w in words), phrase
    for posture, options in synth._POSTURE_ING.items():
        assert all(phrase.split()[0] in POSTURE_WORDS[posture] for phrase in options)


def test_json_schema_and_eval_follow_the_schema() -> None:
    props = description_schema()["properties"]["attributes"]["anyOf"][1]
    heads = ["probabilities", "heads", "text", "confidence", "disagreements", "abstained"]  # optional, from the heads
    assert props["required"] == list(ATTRIBUTE_KEYS) and list(props["properties"]) == [*ATTRIBUTE_KEYS, *heads]
    schema_fields = {k: v for k, v in props["properties"].items() if k in ATTRIBUTE_KEYS}
    assert [k for k, v in schema_fields.items() if v["type"] == "array"] == [f.key for f in FIELDS if f.many]
    from bench.quality import ATTRIBUTE_CATEGORIES, OPTIONAL_CATEGORIES

    assert set(ATTRIBUTE_CATEGORIES) | set(OPTIONAL_CATEGORIES) | {"shoes_color"} == {f.key for f in FIELDS if f.drawn}


def test_schema_atomic_and_cli_helpers_are_standard_library_only() -> None:
    code = ("import json, sys; import runtime.attribute_schema, runtime.attributes, runtime.atomic, "
            "runtime.cli_common; heavy = ('torch', 'numpy', 'PIL', 'pvlm', 'onnxruntime'); "
            "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert json.loads(out) == []
