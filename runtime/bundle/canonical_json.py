"""RFC 8785 canonical JSON and its sha256: the content hash's encoding."""

from __future__ import annotations

import hashlib
import json
import math
from decimal import Decimal
from typing import Any

from .format import MAX_JSON_DEPTH

# -- canonical JSON (RFC 8785) for the content hash --------------------------------------------------------

def canonical_json(value: Any) -> bytes:
    """``value`` as RFC 8785 (JCS) canonical JSON, UTF-8: keys sorted by UTF-16 code units, no whitespace,
    numbers as ECMAScript prints them (``1.0`` -> ``1``, ``1e-05`` -> ``0.00001``).

    ValueError for what JCS cannot represent exactly: NaN, infinities, integers beyond 2**53, lone surrogates.
    """
    try:
        return _jcs(value, 0).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a string is not valid Unicode (lone surrogate)") from None


def _jcs(v: Any, depth: int) -> str:
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    if v is None or isinstance(v, bool):
        return {None: "null", True: "true", False: "false"}[v]
    if isinstance(v, int):
        if abs(v) > 2**53:
            raise ValueError(f"integer {v} is beyond 2**53 (not exactly a JSON number everywhere)")
        return str(v)
    if isinstance(v, float):
        return _es_number(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # the same escapes as JCS: \" \\ \b \f \n \r \t, else \u00xx
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_jcs(x, depth + 1) for x in v) + "]"
    if isinstance(v, dict):
        if not all(isinstance(k, str) for k in v):
            raise ValueError("object keys must be strings")
        keys = sorted(v, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
        return "{" + ",".join(f"{_jcs(k, depth + 1)}:{_jcs(v[k], depth + 1)}" for k in keys) + "}"
    raise ValueError(f"{type(v).__name__} is not JSON")


def _es_number(x: float) -> str:
    """ECMAScript Number::toString of a finite double (shortest round-trip digits, as Python's repr)."""
    if not math.isfinite(x):
        raise ValueError(f"{x} is not a finite number")
    if x == 0:
        return "0"
    if x < 0:
        return "-" + _es_number(-x)
    _, digits, exp = Decimal(repr(x)).as_tuple()
    s = "".join(map(str, digits)).rstrip("0")
    n = len(digits) + int(exp)  # x = 0.s * 10**n
    k = len(s)
    if k <= n <= 21:
        return s + "0" * (n - k)
    if 0 < n <= 21:
        return f"{s[:n]}.{s[n:]}"
    if -6 < n <= 0:
        return "0." + "0" * -n + s
    e = n - 1
    return f"{s if k == 1 else s[0] + '.' + s[1:]}e{'+' if e >= 0 else '-'}{abs(e)}"


def sha256_jcs(value: Any) -> str:
    """sha256 hex digest of ``value``'s canonical JSON."""
    return hashlib.sha256(canonical_json(value)).hexdigest()
