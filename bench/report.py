"""Rendering a bench report: console table, markdown, latency-vs-batch plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLUMNS = ("backend", "batch", "encode ms", "step ms", "p50 ms", "p90 ms", "p99 ms", "img/s", "tok/s", "RSS MB", "GPU MB")


def rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per backend and batch size."""
    out = []
    for name, per in report["results"].items():
        for batch, r in per.items():
            out.append([name, batch, f"{r['encode_ms_p50']:.1f}", f"{r['step_ms_p50']:.2f}", f"{r['latency_ms_p50']:.1f}",
                        f"{r['latency_ms_p90']:.1f}", f"{r['latency_ms_p99']:.1f}", f"{r['images_per_s']:.1f}",
                        f"{r['tokens_per_s']:.0f}", f"{r['peak_rss_mb']:.0f}",
                        "-" if r["peak_device_mb"] is None else f"{r['peak_device_mb']:.0f}"])
    return out


def comparison_lines(report: dict[str, Any]) -> list[str]:
    """``ort vs torch-naive @ batch 32: 7.9x throughput, 8.1x latency`` lines."""
    out = []
    for c in report["comparisons"]:
        if not c["tokens_match"]:
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
    """Fixed-width console table."""
    data = [list(COLUMNS)] + rows(report)
    widths = [max(len(str(r[i])) for r in data) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(str(c).rjust(w) for c, w in zip(r, widths)) for r in data)


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
    lines += [""] + [f"- {s}" for s in comparison_lines(report)] + [f"- {capacity_line(report)}"]
    if report["token_sweep"]:
        lines += ["", "| new tokens | batch | decoder ms/step (p50) |", "|---|---|---|"]
        lines += [f"| {s['new_tokens']} | {s['batch']} | {s['step_ms_p50']:.3f} |" for s in report["token_sweep"]]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: str | Path) -> None:
    """Latency p50 vs batch size, one line per backend (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install matplotlib") from None
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, per in report["results"].items():
        bs = sorted(int(b) for b in per)
        ax.plot(bs, [per[str(b)]["latency_ms_p50"] for b in bs], marker="o", label=name)
    ax.set_xlabel("batch size")
    ax.set_ylabel("end-to-end latency p50 (ms)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(f"PersonVLM {report['model']['backbone']}, {report['config']['new_tokens']} tokens")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
