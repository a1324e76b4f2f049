"""Template captions for crops whose dataset has labels but no sentences.

Only what the labels know is said, in words the caption parser (``runtime.attributes``) reads back to the
same values: "an adult woman wearing a red jacket, black trousers and white shoes, carrying a backpack,
walking, seen from the front." A colour without a garment type goes on "upper-body clothing", which the
parser reads as no garment, so no type is invented.
"""

from __future__ import annotations

from typing import Any

from runtime.attribute_schema import VALUE_PHRASES

_PERSON = {"male": "man", "female": "woman"}


def template_caption(attributes: dict[str, Any]) -> str:
    """A one-sentence caption stating every known attribute of ``attributes`` (schema keys, None = unknown)."""
    a = attributes
    person = " ".join(w for w in (a.get("age"), _PERSON.get(a.get("gender") or "")) if w) or "person"
    if person in ("young", "adult"):
        person += " person"
    worn = [p for p in (_garment(a, "upper", "upper-body clothing"), _garment(a, "lower", "lower-body clothing"),
                        f"{a['shoes_color']} shoes" if a.get("shoes_color") else None,
                        _article(a["headwear"]) if a.get("headwear") not in (None, "none") else None) if p]
    parts = [_article(person) + (f" wearing {_join(worn)}" if worn else "")]
    parts += [VALUE_PHRASES["carrying"][c] for c in a.get("carrying") or ()]
    if a.get("posture"):
        parts.append(a["posture"])
    if a.get("view"):
        parts.append(VALUE_PHRASES["view"][a["view"]])
    return ", ".join(parts) + "."


def _garment(a: dict[str, Any], part: str, untyped: str) -> str | None:
    kind, color = a.get(part), a.get(f"{part}_color")
    if kind is None:
        return f"{color} {untyped}" if color else None
    text = f"{color} {kind}" if color else kind
    return text if kind in ("trousers", "jeans", "shorts", "leggings") else _article(text)


def _article(text: str) -> str:
    return ("an " if text[0] in "aeiou" else "a ") + text


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


__all__ = ["template_caption"]
