"""The description store and its search: descriptions with camera, track, time and box, searched by natural language.

One API over two engines: SQLite with FTS5 (embedded default, standard library; :mod:`.sqlite`) and
PostgreSQL (:mod:`.postgres`, for fleets with several writer nodes). :func:`open_store` picks by URL.

A query ("woman in a red jacket with a backpack") is parsed by :func:`runtime.attributes.parse_attributes`
into attribute filters, which every hit must match, and the query's other words ("glasses",
"stripes"), which rank hits by full-text relevance. Attributes are indexed as tokens
(``uppercolorred``, ``carryingbackpack``, ...) so a filter is an inverted-index intersection, not a
scan. Search returns tracks, each with its best description. ``pvlm-index`` and ``pvlm-search``
(:mod:`.cli`) are the command line over it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .records import Hit, Query, QueryError, Record, Store, StoreError, StoreUnavailable, parse_query, show
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


__all__ = ["Hit", "Query", "QueryError", "Record", "SQLiteStore", "Store", "StoreError", "StoreUnavailable",
           "open_store", "parse_query"]
