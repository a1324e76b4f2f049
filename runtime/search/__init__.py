"""The description store and its search: descriptions with camera, track, time and box, searched by natural language.

One API over two engines: SQLite with FTS5 (embedded default, standard library; :mod:`.sqlite`) and
PostgreSQL (:mod:`.postgres`, for fleets with several writer nodes). :func:`open_store` picks by URL.

A query ("woman in a dark blue jacket without a hat") is parsed by :mod:`.query` into terms: attribute
values filter (every hit has them; a garment also finds its near-synonyms, ranked below it), shades
and free words rank, negations exclude, a colour alone means any garment, typos of schema words are
corrected. Attributes are indexed as tokens
(``uppercolorred``, ``carryingbackpack``, ...) so a filter is an inverted-index intersection, not a
scan; :mod:`.rank` scores what the filters let through (attribute points weighted by the stored
probabilities of the attribute heads, plus bm25 or ts_rank of the free words). A description's n-best
alternatives are indexed too: a track found only through one says so and comes after those found in
shown text. Search returns tracks, best first, each with its best description, the terms it matched
and how sure the store is of each. ``pvlm-index`` and ``pvlm-search``
(:mod:`.cli`) are the command line over it; ``pvlm-web`` (:mod:`.web`) a page and a JSON API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .query import Query, Term, parse_query
from .records import Hit, Page, QueryError, Record, Store, StoreError, StoreUnavailable, show
from .sqlite import SQLiteStore


def open_store(location: str | Path, readonly: bool = False) -> Any:
    """A store for ``location``: ``postgresql://...`` (PostgreSQL) or a SQLite file path (created if absent).

    ``readonly``: only read (search); the location must hold a store already, and nothing is created
    or changed there (a SQLite file is opened read-only).
    """
    loc = str(location)
    if loc.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(loc, readonly=readonly)
    if "://" in loc and not loc.startswith("sqlite://"):
        raise StoreError(f"unknown store URL {show(loc)}: use a SQLite file path or postgresql://...")
    return SQLiteStore(loc.removeprefix("sqlite://"), readonly=readonly)


__all__ = ["Hit", "Page", "Query", "QueryError", "Record", "SQLiteStore", "Store", "StoreError", "StoreUnavailable",
           "Term", "open_store", "parse_query"]
