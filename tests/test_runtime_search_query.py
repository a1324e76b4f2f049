"""runtime.search.query: what a typed query asks for, leaves out, ranks by, and which typos it corrects."""

from __future__ import annotations

import pytest

from runtime.search import QueryError, parse_query
from runtime.search.query import correct_word, edit_distance


def _roles(text, **kw):
    return {t.id: t.role for t in parse_query(text, **kw).terms}


def test_values_filter_shades_and_free_words_rank():
    assert _roles("young woman in a dark blue hoodie with glasses") == {
        "gender:female": "filter", "age:young": "filter", "upper:hoodie": "filter", "upper_color:blue": "filter",
        "upper_shade:dark": "rank", "text:glasses": "rank"}
    assert _roles("man in light trousers") == {"gender:male": "filter", "lower:trousers": "filter",
                                                "lower_shade:light": "rank"}


def test_negation_reaches_its_first_noun():
    assert _roles("man without a hat, carrying a backpack") == {
        "gender:male": "filter", "carrying:backpack": "filter", "-headwear:any": "exclude"}
    assert _roles("woman without glasses or a bag") == {
        "gender:female": "filter", "-carrying:handbag": "exclude", "-text:glasses": "exclude"}
    assert _roles("man not wearing a helmet") == {"gender:male": "filter", "-headwear:helmet": "exclude"}
    assert _roles("man with a cap and no backpack") == {
        "gender:male": "filter", "headwear:cap": "filter", "-carrying:backpack": "exclude"}
    red_jacket = parse_query("man, not in a red jacket").excluded[0]
    assert red_jacket.every and red_jacket.groups == (("uppertypejacket",), ("uppercolorred",))
    assert _roles("person not walking in a coat") == {"upper:coat": "filter", "-posture:walking": "exclude"}


def test_a_colour_without_a_garment_means_any_garment():
    [blue] = parse_query("blue").terms
    assert blue.required and blue.groups == (("uppercolorblue",), ("lowercolorblue",), ("shoescolorblue",))
    [dark] = parse_query("person in dark clothes").terms
    assert not dark.required and dark.groups[0] == ("uppertonedark", "uppercolorblack")
    assert _roles("navy") == {"color:blue": "filter", "shade:dark": "rank"}
    assert "color:red" not in _roles("red jacket")  # a colour on a garment is that garment's


def test_typos_are_corrected_to_schema_words():
    q = parse_query("womn in a blak jaket with a bakcpack")
    assert q.corrections == {"womn": "woman", "blak": "black", "jaket": "jacket", "bakcpack": "backpack"}
    assert {"gender:female", "upper:jacket", "upper_color:black", "carrying:backpack"} <= set(_roles(q.text))
    assert parse_query("short hair woman").corrections == {}  # common description words are not typos
    assert parse_query("man by a boat", known=lambda w: w == "boat").corrections == {}
    assert correct_word("zebra") is None and correct_word("hat") is None  # too far; too short to correct
    assert edit_distance("jaket", "jacket", 1) == 1 and edit_distance("bakcpack", "backpack", 2) == 1
    assert edit_distance("abc", "xyzw", 1) == 2


def test_dropped_terms_and_queries_that_ask_for_nothing():
    q = parse_query("woman in a red jacket", drop=["upper_color:red", "not-a-term"])
    assert [t.id for t in q.terms] == ["gender:female", "upper:jacket"] and [t.id for t in q.dropped] == [
        "upper_color:red"]
    assert q.to_json()["dropped"] == [{"id": "upper_color:red", "label": "red upper", "kind": "attribute",
                                       "role": "filter"}]
    for text, match in [("", "empty query"), ("the a of", "names no attribute"), ("no hat", "leave out"),
                        ("x" * 2001, "2001 characters")]:
        with pytest.raises(QueryError, match=match):
            parse_query(text)
    with pytest.raises(QueryError, match="removed"):
        parse_query("red", drop=["color:red"])


def test_near_synonyms_are_schema_values_of_the_same_field():
    from runtime.attribute_schema import FIELD
    from runtime.search.query import NEAR_VALUES

    for key, table in NEAR_VALUES.items():
        for value, near in table.items():
            assert value in FIELD[key].values and near and set(near) <= set(FIELD[key].values) - {value}
    jacket = parse_query("red jacket").terms[0]
    assert jacket.groups == (("uppertypejacket", "uppertypecoat"),) and jacket.near == ("uppertypecoat",)
    assert jacket.exact.groups == (("uppertypejacket",),) and not jacket.exact.required
    assert [t.id for t in parse_query("red jacket").widened] == ["upper:jacket"]
    assert [t["id"] for t in parse_query("red jacket").to_json()["terms"]] == [
        "upper:jacket", "~upper:jacket", "upper_color:red"]
    assert not parse_query("red jacket", drop=["~upper:jacket"]).terms[0].near
