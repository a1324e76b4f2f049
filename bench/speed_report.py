"""Rendering a bench report: console table, markdown, latency-vs-batch plot."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from runtime.atomic import atomic_path

from .speed import MIN_SAMPLES

COLUMNS = ("backend", "batch", "runs", "encode ms", "step ms", "p50 ms", "p90 ms", "p99 ms", "img/s", "tok/s", "RSS MB",
           "GPU MB")
# Machine-readable columns of --csv: (header, result key).
CSV_FIELDS = (("backend", None), ("batch", "batch"), ("runs", "iters"), ("encode_ms_p50", "encode_ms_p50"),
              ("step_ms_p50", "step_ms_p50"), ("latency_ms_p50", "latency_ms_p50"),
              ("latency_ms_p90", "latency_ms_p90"), ("latency_ms_p99", "latency_ms_p99"),
              ("images_per_s", "images_per_s"), ("tokens_per_s", "tokens_per_s"), ("peak_rss_mb", "peak_rss_mb"),
              ("peak_device_mb", "peak_device_mb"))


def _ms(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per backend and batch size ("-" where there are too few runs for a tail percentile)."""
    out = []
    for name, per in report["results"].items():
        for batch, r in per.items():
            out.append([name, batch, str(r["iters"]), f"{r['encode_ms_p50']:.1f}", f"{r['step_ms_p50']:.2f}",
                        f"{r['latency_ms_p50']:.1f}", _ms(r["latency_ms_p90"]), _ms(r["latency_ms_p99"]),
                        f"{r['images_per_s']:.1f}", f"{r['tokens_per_s']:.0f}", f"{r['peak_rss_mb']:.0f}",
                        _ms(r["peak_device_mb"], 0)])
    return out


def tail_note(report: dict[str, Any]) -> str | None:
    """Why a p90/p99 column shows "-": how many runs there are and how many a tail percentile needs."""
    runs = [r["iters"] for per in report["results"].values() for r in per.values()]
    missing = [q for q, n in MIN_SAMPLES.items() if runs and min(runs) < n]
    if not missing:
        return None
    return ("; ".join(f"p{q} needs >= {MIN_SAMPLES[q]} timed runs" for q in missing)
            + f" (have {min(runs)}{'' if min(runs) == max(runs) else f'-{max(runs)}'} per row; raise --iters)")


def csv_text(report: dict[str, Any]) -> str:
    """``--csv``: one row per backend and batch size, raw numbers (empty where a percentile has too few runs)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([h for h, _ in CSV_FIELDS])
    for name, per in report["results"].items():
        for r in per.values():
            w.writerow([name] + ["" if r[k] is None else r[k] for _, k in CSV_FIELDS[1:]])
    return buf.getvalue()


def comparison_lines(report: dict[str, Any]) -> list[str]:
    """``ort vs torch-naive @ batch 32: 7.9x throughput, 8.1x latency`` lines."""
    out = []
    for c in report["comparisons"]:
        if c.get("decoding"):  # beam search or sampling against greedy on the same backend
            out.append(f"{c['backend']} vs {c['baseline']} (greedy) @ batch {c['batch']}: throughput "
                       f"{1 / c['throughput_x']:.2f}x lower, p50 latency {1 / c['latency_x']:.2f}x higher")
        elif not c["tokens_match"]:
            out.append(f"{c['backend']} vs {c['baseline']} @ batch {c['batch']}: token counts differ, no ratio shown")
        else:
            out.append(f"{c['backend']} vs {c['baseline']} @ batch {c['batch']}: {c['throughput_x']:.1f}x throughput, "
                       f"{c['latency_x']:.1f}x lower p50 latency")
    return out


def capacity_line(report: dict[str, Any]) -> str:
    """Camera capacity of the fastest backend at its best batch size."""
    per_cam = report["config"]["descriptions_per_camera_s"]
    best = max(((n, b, r["images_per_s"]) for n, per in report["results"].items() for b, r in per.items()),
               key=lambda t: t[2])
    return (f"camera capacity: {best[2] / per_cam:.0f} cameras at {per_cam:g} descriptions/camera/s "
            f"({best[0]}, batch {best[1]}, {best[2]:.0f} images/s)")


def table(report: dict[str, Any]) -> str:
    """Fixed-width console table (and the tail-percentile note where it applies)."""
    data = [list(COLUMNS)] + rows(report)
    widths = [max(len(str(r[i])) for r in data) for i in range(len(COLUMNS))]
    lines = ["  ".join(str(c).rjust(w) for c, w in zip(r, widths)) for r in data]
    note = tail_note(report)
    return "\n".join(lines + ([note] if note else []))


def markdown(report: dict[str, Any]) -> str:
    """Markdown document with machine details, the table, ratios, capacity and the token sweep."""
    m, c = report["machine"], report["config"]
    lines = [
        "# pvlm-bench report", "",
        f"- machine: {m['cpu']}, {m['cores']} cores, threads {m['threads'] or 'default'}, GPU {m['gpu'] or 'none'}",
        f"- libraries: {', '.join(f'{k} {v}' for k, v in m['libraries'].items())}",
        f"- model: {report['model']}",
        f"- {c['new_tokens']} new tokens ({'natural stop at EOS' if c['natural'] else 'fixed work, EOS ignored'}), "
        f"{c['warmup']} warm-up + {c['iters']} timed iterations, interleaved", "",
        "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows(report)]
    note = tail_note(report)
    lines += ["", note] if note else []
    lines += [""] + [f"- {s}" for s in comparison_lines(report)] + [f"- {capacity_line(report)}"]
    if report["token_sweep"]:
        lines += ["", "| new tokens | batch | decoder ms/step (p50) |", "|---|---|---|"]
        lines += [f"| {s['new_tokens']} | {s['batch']} | {s['step_ms_p50']:.3f} |" for s in report["token_sweep"]]
    return "\n".join(lines) + "\n"


def caption(report: dict[str, Any]) -> str:
    """Machine, threads, versions and run counts, for the plot."""
    m, c = report["machine"], report["config"]
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if k != "personvlm-toolkit")
    runs = sorted({r["iters"] for per in report["results"].values() for r in per.values()})
    return (f"{m['cpu']}, {m['cores']} cores, threads {m['threads'] or 'default'}, GPU {m['gpu'] or 'none'}\n"
            f"{libs}; {c['new_tokens']} tokens, {'/'.join(map(str, runs))} timed runs per point")


def plot(report: dict[str, Any], path: str | Path) -> None:
    """Two panels against batch size: p50 latency with p99 whiskers (where there are enough runs), and
    throughput; ticks at the measured batch sizes only, machine and versions in the caption (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullLocator
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install 'personvlm-toolkit[eval]'") from None
    fig, (lat, thr) = plt.subplots(1, 2, figsize=(10, 4.4))
    measured: set[int] = set()
    for name, per in report["results"].items():
        bs = sorted(int(b) for b in per)
        measured.update(bs)
        p50 = [per[str(b)]["latency_ms_p50"] for b in bs]
        p99 = [per[str(b)]["latency_ms_p99"] for b in bs]
        upper = [0.0 if q is None else q - m for q, m in zip(p99, p50)]
        line = lat.errorbar(bs, p50, yerr=[[0.0] * len(bs), upper], marker="o", capsize=3, label=name)
        thr.plot(bs, [per[str(b)]["images_per_s"] for b in bs], marker="o", color=line[0].get_color(), label=name)
    ticks = sorted(measured)
    for ax in (lat, thr):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("batch size")
        ax.grid(True, which="major", alpha=0.3)
    lat.set_yscale("log")
    note = tail_note(report)
    lat.set_ylabel("end-to-end latency p50 (ms)" + ("" if note else ", whiskers p99"))
    thr.set_ylabel("throughput (images/s, at p50)")
    lat.legend(fontsize=8)
    fig.suptitle(f"PersonVLM {report['model']['backbone']}, {report['config']['new_tokens']} tokens per image")
    fig.text(0.5, 0.01, caption(report) + (f"\nno p99 whiskers: {note}" if note else ""), ha="center", va="bottom",
             fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    with atomic_path(path) as tmp:  # the format from the target's name: the temporary one ends in .tmp
        fig.savefig(tmp, dpi=120, format=Path(path).suffix.lstrip(".").lower() or "png")
    plt.close(fig)
