"""Search measurements: retrieval quality on synthetic crops, and SQLite ingest/query speed at scale.

Retrieval (the way image-text retrieval is measured): N synthetic crops with known attributes
(``pvlm.synth``, a seed the bundle never trained on) are described by a bundle and indexed as
``pvlm-index`` stores ``pvlm-describe --json`` lines (text, attributes with any probabilities, n-best
alternatives), one track per crop; queries are written from the ground-truth attributes of a random
crop (1-4 facts each, e.g. "a woman in a red jacket carrying a backpack"). A crop is relevant to a
query when its ground truth satisfies every fact. Reported per store ("model": the bundle's greedy
descriptions; "model_unweighted": the same without the attribute heads' probabilities, when it has
them; with ``n_best`` > 1 also "model_beamsB" (the beam search's best sequence only) and
"model_nbestK" (the same crops described with beam search, the best sequence shown and the other
K-1 indexed as alternatives); "ground truth": the synthetic captions, i.e. the parser's ceiling):

- Recall@K: relevant crops in the top K / min(K, relevant crops) (1.0 = the top K are all relevant
  or hold every relevant crop);
- source Recall@K: queries whose own crop is in the top K (other crops may match as well, so this
  is bounded by K / relevant for broad queries);
- precision@10: relevant crops among the (at most 10) returned, 0 when nothing is returned.

Operator queries (:data:`OPERATOR_QUERIES`): twelve queries as an operator types them, with shades,
negation, a colour alone and typos, scored the same way against facts that may be negative
(``not_carrying``) or about any garment (``any_color``); a query the store refuses counts as no hit.

Scale: a SQLite store on disk filled with N rows (captions drawn from a pool of parsed synthetic
captions), timing ingest and then queries (warm-up, then timed; p50/p99).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from runtime.atomic import write_json
from runtime.attribute_schema import VALUE_PHRASES
from runtime.cli_common import CONTEXT_SETTINGS, Command, Group, common_options, version_option

from .quality import ATTRIBUTE_CATEGORIES, OPTIONAL_CATEGORIES, attribute_label

# The facts a query may state: the labels pvlm-eval scores (no shoes). Their order is the order queries
# draw them in, so the queries of a seed depend on it.
FACTS: tuple[str, ...] = OPTIONAL_CATEGORIES + ATTRIBUTE_CATEGORIES
# Words some synthetic captions have that the parser leaves alone: they exercise the ranked path.
RANK_WORDS = ("zip", "knit", "baseball", "rolling", "collared", "hooded", "brimmed", "shoulder", "button")


# (query as typed, facts a relevant crop has): "any_color" is any garment's colour, "not_KEY" a value it lacks.
OPERATOR_QUERIES: tuple[tuple[str, dict[str, str]], ...] = (
    ("woman with a backpack", {"gender": "female", "carrying": "backpack"}),
    ("man in a red jacket", {"gender": "male", "upper": "jacket", "upper_color": "red"}),
    ("green hoodie", {"upper": "hoodie", "upper_color": "green"}),
    ("dark blue hoodie", {"upper": "hoodie", "upper_color": "blue"}),
    ("man without a hat", {"gender": "male", "headwear": "none"}),
    ("woman not carrying a backpack", {"gender": "female", "not_carrying": "backpack"}),
    ("blue", {"any_color": "blue"}),
    ("person in dark clothes", {"any_color": "black"}),
    ("womn in red jaket", {"gender": "female", "upper": "jacket", "upper_color": "red"}),
    ("man with an umbrela", {"gender": "male", "carrying": "umbrella"}),
    ("light grey trousers", {"lower": "trousers", "lower_color": "grey"}),
    ("person in a black coat seen from behind", {"upper": "coat", "upper_color": "black", "view": "back"}),
)


@dataclass(frozen=True)
class Query:
    """A generated query: its text and the ground-truth facts a relevant crop must have."""

    text: str
    facts: dict[str, str]
    source: int


def _available(attrs: dict[str, str]) -> list[str]:
    return [f for f in FACTS if attrs[f] != "none"]  # "none": no hat, nothing carried


def make_query(attrs: dict[str, str], source: int, rng: random.Random, n_facts: int) -> Query:
    """A natural-language query stating ``n_facts`` of ``attrs`` (a colour brings its garment along)."""
    avail = _available(attrs)
    chosen: set[str] = set()
    for f in rng.sample(avail, len(avail)):
        need = {f} | ({f.removesuffix("_color")} if f.endswith("_color") else set())
        if len(chosen | need) <= n_facts:
            chosen |= need
        if len(chosen) >= n_facts:
            break
    facts = {f: attrs[f] for f in chosen}
    who = {"male": "man", "female": "woman"}.get(facts.get("gender", ""), "person")
    if "age" in facts:
        who = f"{'young' if facts['age'] == 'young' else 'adult'} {who}"
    parts = [("an " if who[0] in "aeiou" else "a ") + who]
    if "posture" in facts:
        parts.append(facts["posture"])
    clothes = []
    if "upper" in facts:
        phrase = f"{facts.get('upper_color', '')} {facts['upper']}".strip()
        clothes.append(("an " if phrase[0] in "aeiou" else "a ") + phrase)
    if "lower" in facts:
        word = facts["lower"]
        clothes.append(f"{'a ' if word == 'skirt' else ''}{facts.get('lower_color', '')} {word}".strip())
    if clothes:
        parts.append("in " + " and ".join(clothes))
    if "headwear" in facts:
        parts.append(f"wearing a {facts['headwear']}")
    if "carrying" in facts:
        parts.append(VALUE_PHRASES["carrying"][facts["carrying"]])
    if "view" in facts:
        parts.append(VALUE_PHRASES["view"][facts["view"]])
    return Query(" ".join(parts).replace("  ", " "), facts, source)


def make_queries(truth: list[dict[str, str]], n: int, seed: int) -> list[Query]:
    """``n`` queries, 1-4 facts each (uniform), from the attributes of random crops."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        i = rng.randrange(len(truth))
        out.append(make_query(truth[i], i, rng, rng.randint(1, 4)))
    return out


def _has(a: dict[str, str], key: str, value: str) -> bool:
    if key == "any_color":
        return value in (a["upper_color"], a["lower_color"], a["shoes_color"])
    if key.startswith("not_"):
        return a[key.removeprefix("not_")] != value
    return a[key] == value


def relevant(q: Query, truth: list[dict[str, str]]) -> set[int]:
    """Crops whose ground truth has every fact of ``q``."""
    return {i for i, a in enumerate(truth) if all(_has(a, k, v) for k, v in q.facts.items())}


def search_tracks(store: Any, text: str, limit: int, exact: bool = False) -> list[int]:
    """The crop indices ``store`` finds for ``text``, best first; ``exact``: without near-synonyms (a jacket
    only, not a coat)."""
    drop: list[str] = []
    if exact:
        from runtime.search import parse_query
        from runtime.search.query import NEAR_PREFIX

        drop = [NEAR_PREFIX + t.id for t in parse_query(text).terms if t.near]
    return [int(h.track) for h in store.search(text, limit=limit, drop=drop)]


def score_operator(store: Any, truth: list[dict[str, str]], k: int = 10, exact: bool = False) -> dict:
    """Recall@1/10 and precision@10 of ``store`` over :data:`OPERATOR_QUERIES` (refused: no hit), per query too;
    ``exact``: searched without near-synonyms."""
    from runtime.search import QueryError

    per, refused = {}, 0
    for text, facts in OPERATOR_QUERIES:
        rel = relevant(Query(text, facts, -1), truth)
        try:
            hits = search_tracks(store, text, k, exact)
        except QueryError:
            hits, refused = [], refused + 1
        per[text] = {"relevant": len(rel), "returned": len(hits),
                     "recall@1": len(rel.intersection(hits[:1])) / min(1, len(rel)) if rel else 0.0,
                     "recall@10": len(rel.intersection(hits[:k])) / min(k, len(rel)) if rel else 0.0,
                     "precision@10": len(rel.intersection(hits[:k])) / len(hits[:k]) if hits else 0.0}
    mean = statistics.fmean
    return {**{m: mean(v[m] for v in per.values()) for m in ("recall@1", "recall@10", "precision@10")},
            "queries_with_no_hit": sum(not v["returned"] for v in per.values()), "refused": refused,
            "per_query": per}


def score(store: Any, queries: list[Query], truth: list[dict[str, str]], ks: tuple[int, ...] = (1, 5, 10),
          exact: bool = False) -> dict:
    """Recall@K, source Recall@K and precision@10 of ``store`` (tracks named by crop index) over ``queries``;
    ``exact``: searched without near-synonyms."""
    rec = {k: [] for k in ks}
    src = {k: [] for k in ks}
    p10 = []
    empty = 0
    by_facts = {n: [] for n in range(1, 5)}
    for q in queries:
        rel = relevant(q, truth)
        hits = search_tracks(store, q.text, max(ks), exact)
        empty += not hits
        for k in ks:
            top = hits[:k]
            rec[k].append(len(rel.intersection(top)) / min(k, len(rel)))
            src[k].append(q.source in top)
        p = len(rel.intersection(hits[:10])) / len(hits[:10]) if hits else 0.0
        p10.append(p)
        by_facts[len(q.facts)].append(p)
    mean = statistics.fmean
    return {
        **{f"recall@{k}": mean(rec[k]) for k in ks},
        **{f"source_recall@{k}": mean(src[k]) for k in ks},
        "precision@10": mean(p10),
        "precision@10_by_facts": {n: (mean(v) if v else None) for n, v in by_facts.items()},
        "queries_with_no_hit": empty,
        "queries": len(queries),
    }


def describe_crops(bundle: str, images: list[Any], batch: int, decoding: Any = None, progress: bool = True
                   ) -> tuple[list[Any], float]:
    """Every image's :class:`runtime.Description` from ``bundle`` (ONNX Runtime on the CPU) and the seconds taken."""
    from tqdm import tqdm

    from runtime import Describer

    out = []
    t0 = time.perf_counter()
    with Describer(bundle, backend="onnxruntime-cpu", decoding=decoding) as d:
        for s in tqdm(range(0, len(images), batch), desc=f"describe ({getattr(decoding, 'label', 'greedy')})",
                      disable=not progress):
            out += d.describe(images[s : s + batch])
    return out, time.perf_counter() - t0


def index_descriptions(descriptions: list[Any], alternatives: bool = True, probabilities: bool = True) -> Any:
    """An in-memory store of ``descriptions`` as ``pvlm-index`` keeps them, one track per crop (named by its index);
    ``alternatives``: with their n-best alternatives; ``probabilities``: with the attribute heads' probabilities
    (without: the stated values alone, every match weighing 1)."""
    from runtime.search import Record, SQLiteStore
    from runtime.search.records import HEAD_KEYS

    store = SQLiteStore(":memory:")
    records = []
    for i, d in enumerate(descriptions):
        if d.ok and d.text:
            rec = Record.from_description(d, "synth", str(i), float(i))
            if not alternatives:
                rec = dataclasses.replace(rec, alternatives=None)
            if not probabilities:
                rec = dataclasses.replace(rec, attributes={k: v for k, v in d.attributes.items() if k not in HEAD_KEYS})
            records.append(rec)
    store.add(records)
    return store


def run_retrieval(bundle: str | None, n: int, n_queries: int, seed: int, batch: int, progress: bool = True,
                  n_best: int = 1, beams: int | None = None) -> dict:
    """Describe ``n`` synthetic crops with ``bundle`` (None: ground-truth captions only) and score the stores;
    ``n_best`` > 1: describe them again with beam search (``beams``, default ``n_best``) and score the best
    sequences alone and with the other ``n_best - 1`` indexed as alternatives."""
    from tqdm import tqdm

    from pvlm.synth import synth_example
    from runtime.search import Record, SQLiteStore

    examples = [synth_example(seed, i, size=(128, 64)) for i in tqdm(range(n), desc="crops", disable=not progress)]
    truth = [a for _, a, _ in examples]
    queries = make_queries(truth, n_queries, seed + 1)
    result: dict[str, Any] = {"crops": n, "seed": seed, "queries": n_queries,
                              "examples": [q.text for q in queries[:5]]}
    gt = SQLiteStore(":memory:")
    gt.add(Record("synth", str(i), float(i), cap) for i, (_, _, cap) in enumerate(examples))
    _score_store(result, "ground_truth", gt, queries, truth)
    if bundle:
        images = [img for img, _, _ in examples]
        greedy, result["describe_s"] = describe_crops(bundle, images, batch, None, progress)
        result["bundle"] = str(bundle)
        _score_store(result, "model", index_descriptions(greedy), queries, truth)
        if any("probabilities" in d.attributes for d in greedy):  # a bundle with heads: what ranking by them does
            _score_store(result, "model_unweighted", index_descriptions(greedy, probabilities=False), queries, truth)
        result["model_attribute_accuracy"] = _attribute_accuracy([d.text for d in greedy], truth)
        if n_best > 1:
            from runtime.decoding import DecodingOptions

            opts = DecodingOptions(beams=beams or n_best, n_best=n_best)
            described, result[f"describe_{opts.label}_s"] = describe_crops(bundle, images, batch, opts, progress)
            _score_store(result, f"model_{opts.label}", index_descriptions(described, alternatives=False), queries,
                         truth)
            _score_store(result, f"model_nbest{n_best}", index_descriptions(described), queries, truth)
            result[f"model_{opts.label}_attribute_accuracy"] = _attribute_accuracy([d.text for d in described], truth)
            result["alternatives_per_crop"] = statistics.fmean(len({a.text for a in d.alternatives} - {d.text})
                                                               for d in described)
    return result


def _score_store(result: dict, name: str, store: Any, queries: list[Query], truth: list[dict[str, str]]) -> None:
    """Generated and operator queries over ``store``, as searched (near-synonyms too) and ``exact``."""
    for suffix, exact in (("", False), ("_exact", True)):
        result[f"{name}{suffix}"] = score(store, queries, truth, exact=exact)
        result[f"{name}{suffix}_operator"] = score_operator(store, truth, exact=exact)


def _attribute_accuracy(texts: list[str], truth: list[dict[str, str]]) -> dict[str, float]:
    from runtime.attributes import parse_attributes

    ok = {f: 0 for f in FACTS}
    for t, a in zip(texts, truth):
        p = parse_attributes(t)
        for f in FACTS:
            ok[f] += attribute_label(f, p[f]) == attribute_label(f, a[f])
    return {f: v / len(texts) for f, v in ok.items()}


def _caption_pool(pool: int, rng: Any, progress: bool) -> tuple[list[dict[str, str]], list[str], list[dict]]:
    """``pool`` synthetic (labels, caption, parsed caption) triples drawn from numpy Generator ``rng``."""
    from tqdm import tqdm

    from pvlm.synth import caption, sample_attributes
    from runtime.attributes import parse_attributes

    truth, texts = [], []
    for _ in tqdm(range(pool), desc="captions", disable=not progress):
        a = sample_attributes(rng)
        truth.append(a)
        texts.append(caption(a, rng))
    return truth, texts, [parse_attributes(t) for t in texts]


_SCALE_T0 = 1_764_547_200.0  # 2025-12-01 UTC: the first row's time stamp


def _fill(store: Any, rows: int, texts: list[str], parsed: list[dict], batch: int, rng: Any,
          progress: bool) -> tuple[float, float]:
    """Add ``rows`` records (10 per track, 50 cameras) in ``batch``-sized calls; (wall s, CPU s) of the adds."""
    from tqdm import tqdm

    from runtime.search import Record

    order = rng.integers(len(texts), size=rows)
    wall = cpu = 0.0
    with tqdm(total=rows, desc="ingest", disable=not progress) as bar:
        for s in range(0, rows, batch):
            recs = [Record(f"cam{(i // 10) % 50}", str(i // 10), _SCALE_T0 + i * 0.1, texts[j], parsed[j],
                           (10.0, 20.0, 74.0, 148.0), "bench")
                    for i, j in zip(range(s, min(rows, s + batch)), order[s : s + batch].tolist())]
            t, c = time.perf_counter(), time.process_time()
            store.add(recs)
            wall += time.perf_counter() - t
            cpu += time.process_time() - c
            bar.update(len(recs))
    return wall, cpu


def _scale_queries(truth: list[dict[str, str]], n_queries: int, seed: int) -> list[str]:
    """Generated queries, a quarter of them with a word the parser leaves to the ranked text search."""
    r = random.Random(seed)
    queries = []
    for _ in range(n_queries):
        q = make_query(truth[r.randrange(len(truth))], 0, r, r.randint(1, 4)).text
        if r.random() < 0.25:
            q += f" {r.choice(RANK_WORDS)}"
        queries.append(q)
    return queries


def _time_queries(store: Any, queries: list[str], since: float) -> dict[str, Any]:
    """Warm up, then time each query (wall and this process's CPU) and half of them with camera/since filters."""
    import numpy as np

    for q in queries[:20]:  # warm-up: page cache, statement cache
        store.search(q)
    # Wall time, and this process's CPU time: on a shared machine the gap is time spent waiting for a core.
    lat, cpu, lat_cam = [], [], []
    for q in queries:
        t, c = time.perf_counter(), time.process_time()
        store.search(q, limit=10)
        lat.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    for q in queries[: len(queries) // 2]:
        t = time.perf_counter()
        store.search(q, camera="cam7", since=since, limit=10)
        lat_cam.append((time.perf_counter() - t) * 1e3)

    def pct(v: list[float], p: float) -> float:
        return float(np.percentile(v, p))

    return {"query_ms": {"p50": pct(lat, 50), "p99": pct(lat, 99), "mean": statistics.fmean(lat), "max": max(lat)},
            "query_cpu_ms": {"p50": pct(cpu, 50), "p99": pct(cpu, 99), "mean": statistics.fmean(cpu)},
            "query_camera_since_ms": {"p50": pct(lat_cam, 50), "p99": pct(lat_cam, 99)},
            "slowest": sorted(zip(lat, queries), reverse=True)[:3]}


def run_scale(rows: int, pool: int, n_queries: int, batch: int, path: str | None, seed: int,
              progress: bool = True, reuse: bool = False) -> dict:
    """Fill a SQLite store with ``rows`` descriptions (10 per track, 50 cameras); time ingest and queries.
    ``reuse``: ``path`` holds a store this command filled with the same ``rows`` and ``seed``: only time queries."""
    import numpy as np

    from runtime.search import SQLiteStore

    rng = np.random.default_rng(seed)
    truth, texts, parsed = _caption_pool(pool, rng, progress)
    ingest: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pvlm-scale-") as tmp:
        db = path or os.path.join(tmp, "scale.db")
        store = SQLiteStore(db, readonly=reuse)
        try:
            if not reuse:
                wall, cpu = _fill(store, rows, texts, parsed, batch, rng, progress)
                ingest = {"ingest_s": wall, "ingest_per_s": rows / wall, "ingest_cpu_s": cpu,
                          "ingest_per_cpu_s": rows / cpu}
            timed = _time_queries(store, _scale_queries(truth, n_queries, seed), _SCALE_T0 + rows * 0.05)
        finally:
            store.close()
        size = os.path.getsize(db)
    return {"rows": rows, "caption_pool": pool, "batch": batch, **ingest, "db_bytes": size, "queries": n_queries,
            **timed}


def _write(out: str | None, result: dict) -> None:
    if not out:
        return
    write_json(out, result)


@click.group(cls=Group, context_settings=CONTEXT_SETTINGS)
@version_option
def main() -> None:
    """Measure the description store: retrieval quality and speed at scale."""


@main.command("retrieval", cls=Command, context_settings=CONTEXT_SETTINGS)
@click.option("--bundle", type=click.Path(file_okay=False, exists=True), help="Exported bundle to describe crops.")
@click.option("--n", type=click.IntRange(min=10), default=1000, show_default=True, help="Synthetic crops.")
@click.option("--queries", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=777, show_default=True)
@click.option("--batch-size", "batch", type=click.IntRange(min=1), default=32, show_default=True,
              help="Images per describe call.")
@click.option("--n-best", type=click.IntRange(min=1), default=1, show_default=True,
              help="Also describe the crops with beam search and index this many sequences per crop (the best shown, "
                   "the rest as alternatives), beside greedy.")
@click.option("--beams", type=click.IntRange(min=2), help="Beam width for --n-best  [default: --n-best]")
@click.option("--json-out", "out", type=click.Path(dir_okay=False), help="Also write the result as JSON here.")
@common_options()
def retrieval_cmd(bundle: str | None, n: int, queries: int, seed: int, batch: int, n_best: int, beams: int | None,
                  out: str | None, quiet: bool) -> None:
    """Recall@1/5/10 and precision@10 with the bundle's descriptions and with ground-truth captions."""
    if n_best > 1 and not bundle:
        raise click.BadParameter("--n-best needs --bundle", param_hint="--n-best")
    if beams is not None and beams < n_best:
        raise click.BadParameter(f"--beams ({beams}) must be at least --n-best ({n_best})", param_hint="--beams")
    res = run_retrieval(bundle, n, queries, seed, batch, progress=not quiet, n_best=n_best, beams=beams)
    _write(out, res)
    keys = ("recall@1", "recall@5", "recall@10", "source_recall@1", "source_recall@5", "source_recall@10",
            "precision@10")
    beam = f"model_beams{beams or n_best}"
    names = ("ground_truth", "ground_truth_exact", "model", "model_exact", "model_unweighted",
             "model_unweighted_exact", beam, f"{beam}_exact",
             f"model_nbest{n_best}", f"model_nbest{n_best}_exact")
    click.echo(f"{'captions':<24}" + "".join(f"{k:>18}" for k in keys))
    for name in names:
        if name in res:
            click.echo(f"{name:<24}" + "".join(f"{res[name][k]:>18.3f}" for k in keys))
    click.echo(f"{'operator':<24}" + "".join(f"{k:>14}" for k in ("recall@1", "recall@10", "precision@10", "no hit")))
    for name in names:
        if f"{name}_operator" in res:
            op = res[f"{name}_operator"]
            click.echo(f"{name:<24}" + "".join(f"{op[k]:>14.3f}" for k in ("recall@1", "recall@10", "precision@10"))
                       + f"{op['queries_with_no_hit']:>14d}")
    if not quiet:
        click.echo(json.dumps(res, indent=2))


@main.command("scale", cls=Command, context_settings=CONTEXT_SETTINGS)
@click.option("--rows", type=click.IntRange(min=1000), default=1_000_000, show_default=True)
@click.option("--pool", type=click.IntRange(min=100), default=20_000, show_default=True,
              help="Distinct synthetic captions the rows are drawn from.")
@click.option("--queries", type=click.IntRange(min=20), default=300, show_default=True)
@click.option("--batch-size", "batch", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Records per add().")
@click.option("--db", type=click.Path(dir_okay=False), help="Keep the store here (default: a temporary file).")
@click.option("--reuse", is_flag=True, help="--db holds a store an earlier run filled: only time the queries.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--json-out", "out", type=click.Path(dir_okay=False), help="Also write the result as JSON here.")
@common_options()
def scale_cmd(rows: int, pool: int, queries: int, batch: int, db: str | None, reuse: bool, seed: int,
              out: str | None, quiet: bool) -> None:
    """Ingest rate and query p50/p99 on a SQLite store of --rows descriptions."""
    if reuse and not (db and Path(db).is_file()):
        raise click.BadParameter("--reuse needs --db naming an existing store", param_hint="--reuse")
    if db and Path(db).exists() and not reuse:
        raise click.BadParameter(f"{db} already exists (--reuse times queries on it)", param_hint="--db")
    res = run_scale(rows, pool, queries, batch, db, seed, progress=not quiet, reuse=reuse)
    _write(out, res)
    click.echo(json.dumps(res, indent=2))


@main.command("web", cls=Command, context_settings=CONTEXT_SETTINGS)
@click.option("--db", required=True, type=click.Path(dir_okay=False, exists=True),
              help="The store to serve (pvlm-bench-search scale --db fills one).")
@click.option("--clients", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Concurrent clients, each sending its next request when the last one answers.")
@click.option("--requests", type=click.IntRange(min=1), default=400, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="pvlm-web --workers (server processes).")
@click.option("--rate", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Requests per second per client (0: each client sends its next request as soon as answered).")
@click.option("--browser/--no-browser", default=True, show_default=True,
              help="Also time the page's first render in chromium (Playwright).")
@click.option("--json-out", "out", type=click.Path(dir_okay=False), help="Also write the result as JSON here.")
@common_options()
def web_cmd(db: str, clients: int, requests: int, seed: int, workers: int, rate: float, browser: bool,
            out: str | None, quiet: bool) -> None:
    """pvlm-web's search latency (p50/p99) under --clients concurrent clients, and the page's first render."""
    from .web_load import run_web

    res = run_web(db, clients, requests, seed, browser, workers, rate)
    _write(out, res)
    click.echo(json.dumps(res, indent=2))
