"""One self-contained HTML page for a ``pvlm-eval`` report: summary tables, then a card per image.

Everything is inline (CSS, base64 JPEG thumbnails), so the file opens offline and can be mailed around.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runtime.atomic import write_text

THUMB_HEIGHT = 160

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1d1d1f;
background:#fafafa}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:24px 0 8px}
.meta{color:#555;font-size:13px;margin:2px 0}
.tables{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
table{border-collapse:collapse;font-size:13px;background:#fff}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left}th{background:#f0f0f0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.na{color:#888;font-style:italic}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:12px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;display:flex;gap:10px}
.card img,.noimg{height:160px;flex:none;border-radius:3px}
.noimg{width:80px;background:#eee;color:#888;font-size:11px;display:flex;align-items:center;justify-content:center}
.body{font-size:12px;min-width:0;overflow-wrap:anywhere}
.name{color:#777;font-size:11px}.gen{margin:4px 0}.ref{margin:4px 0;color:#555}
.err{color:#b00020}
.attrs{border:none;margin-top:4px;font-size:11px}.attrs td{border:none;padding:1px 4px}
h3{font-size:14px;margin:8px 0 4px}
td.low{background:#fde2e1;font-weight:bold}td.diag{background:#e6f4ea}td.off{background:#fde2e1}
.ok{color:#137333;font-weight:bold}.bad{color:#b00020;font-weight:bold}.skip{color:#999}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return '<span class="na">n/a</span>'
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _e(value)


def _attr_value(value: Any) -> str:
    if value is None or value == []:
        return "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def thumbnail_data_uri(path: str | os.PathLike, height: int = THUMB_HEIGHT) -> str | None:
    """``data:image/jpeg;base64,...`` of the image resized to ``height`` (aspect kept); None if unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w = max(1, round(im.width * height / max(1, im.height)))
            buf = io.BytesIO()
            im.resize((w, height), Image.BILINEAR).save(buf, format="JPEG", quality=85)
    except (OSError, ValueError, SyntaxError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _table(headers: list[str], rows: list[list[str]], title: str) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(r) + "</tr>" for r in rows)
    return f'<div><h2>{_e(title)}</h2><table><tr>{head}</tr>{body}</table></div>'


def _td(value: Any, num: bool = False, digits: int = 4) -> str:
    return f'<td class="num">{_fmt(value, digits)}</td>' if num else f"<td>{_fmt(value)}</td>"


def _summary(report: Mapping[str, Any]) -> str:
    parts = []
    metrics = report.get("caption_metrics") or {}
    parts.append(_table(["metric", "value"], [[_td(k), _td(v, isinstance(v, float))] for k, v in metrics.items()],
                        f"Caption metrics ({report.get('scored_backend', '')})"))
    attrs = report.get("attributes") or {}
    rows = []
    for k, v in (attrs.get("categories") or {}).items():
        acc, maj = v.get("accuracy"), v.get("majority_rate")
        lift = (acc - maj) * 100 if isinstance(acc, float) and isinstance(maj, float) else None
        low = lift is not None and lift < 20  # barely better than ignoring the image
        top = v.get("top_prediction")
        top_txt = None if top is None else f"{top} ({v.get('top_prediction_rate', 0):.0%})"
        rows.append([_td(k), _td(acc, True, 3), _td(maj, True, 3), _td(v.get("majority")),
                     f'<td class="num{" low" if low else ""}">{_fmt(lift, 1)}</td>', _td(top_txt), _td(v.get("n"), True)])
    rows.append(["<td><b>mean</b></td>", _td(attrs.get("mean"), True, 3)] + ["<td></td>"] * 5)
    parts.append(_table(["attribute", "accuracy", "majority rate", "majority value", "lift (pt)",
                         "commonest answer", "n"], rows,
                        f"Attribute accuracy (ground truth: {attrs.get('source', 'n/a')})"))
    parity = report.get("parity") or {}
    if parity.get("available"):
        rows = [[_td(name), _td(p.get("exact_match_rate"), True), _td(p.get("token_agreement"), True),
                 _td(p.get("n"), True)] for name, p in parity.get("backends", {}).items()]
        parts.append(_table(["backend", "exact match", "token agreement", "n"], rows,
                            "Parity with the PyTorch FP32 reference"))
    else:
        parts.append(f'<div><h2>Parity with the PyTorch FP32 reference</h2><p class="na">'
                     f'not measured: {_e(parity.get("reason") or "no reference")}</p></div>')
    rows = [[_td(name), _td(t.get("images_per_s"), True, 1), _td(t.get("seconds"), True, 2),
             _td(t.get("batch_size"), True)] for name, t in (report.get("throughput") or {}).items()]
    parts.append(_table(["backend", "images/s", "seconds", "batch"], rows, "Throughput (whole evaluation)"))
    confusions = "".join(_confusion(k, v["confusion"]) for k, v in (attrs.get("categories") or {}).items()
                         if v.get("confusion"))
    return ('<div class="tables">' + "".join(parts) + "</div>"
            + (f'<h2>Confusion (rows: true, columns: predicted)</h2><div class="tables">{confusions}</div>'
               if confusions else ""))


def _confusion(name: str, confusion: Mapping[str, Mapping[str, int]]) -> str:
    truth = sorted(confusion)
    cols = truth + sorted({p for row in confusion.values() for p in row} - set(truth))
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = "".join(
        f"<tr><th>{_e(t)}</th>" + "".join(
            f'<td class="num{" diag" if c == t else (" off" if confusion[t].get(c) else "")}">'
            f'{confusion[t].get(c, 0) or ""}</td>' for c in cols) + "</tr>" for t in truth)
    return f'<div><h3>{_e(name)}</h3><table class="conf"><tr><th></th>{head}</tr>{body}</table></div>'


def mistakes_first(rows: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Rows with an error or a wrong attribute first (most wrong attributes first), then the rest; stable."""
    def wrong(row: Mapping[str, Any]) -> int:
        bad = sum(a.get("correct") is False for a in (row.get("attributes") or {}).values())
        return bad + (100 if row.get("error") else 0)
    return sorted(rows, key=lambda r: -wrong(r))


def _card(row: Mapping[str, Any], images_inline: bool, html_dir: Path) -> str:
    image = str(row.get("image", ""))
    if images_inline:
        src = thumbnail_data_uri(image)
    else:
        try:
            src = Path(os.path.relpath(image, html_dir)).as_posix()
        except ValueError:  # another drive on Windows
            src = Path(image).resolve().as_uri()
    img = (f'<img src="{_e(src)}" alt="{_e(Path(image).name)}">' if src
           else '<div class="noimg">image unavailable</div>')
    lines = [f'<div class="name">{_e(Path(image).name)}</div>']
    if row.get("error"):
        lines.append(f'<div class="err">error: {_e(row["error"])}</div>')
    match = row.get("matches_reference")
    mark = "" if match is None else (' <span class="ok" title="same tokens as PyTorch">=pt</span>' if match
                                     else ' <span class="bad" title="tokens differ from PyTorch">&ne;pt</span>')
    lines.append(f'<div class="gen"><b>generated:</b> {_e(row.get("generated", ""))}{mark}</div>')
    lines.append(f'<div class="ref"><b>reference:</b> {_e(row.get("reference", ""))}</div>')
    for name, text in (row.get("other_backends") or {}).items():
        lines.append(f'<div class="ref"><b>{_e(name)}:</b> {_e(text)}</div>')
    cells = []
    for key, a in (row.get("attributes") or {}).items():
        ok = a.get("correct")
        sym = '<span class="skip">&middot;</span>' if ok is None else (
            '<span class="ok">&#10003;</span>' if ok else '<span class="bad">&#10007;</span>')
        detail = _e(_attr_value(a.get("predicted")))
        if not ok:
            detail += f' <span class="skip">(expected {_e(_attr_value(a.get("expected")))})</span>'
        cells.append(f"<tr><td>{sym}</td><td>{_e(key)}</td><td>{detail}</td></tr>")
    lines.append(f'<table class="attrs">{"".join(cells)}</table>')
    return f'<div class="card">{img}<div class="body">{"".join(lines)}</div></div>'


def render_html(report: Mapping[str, Any], images_inline: bool = True, max_images: int = 200,
                html_dir: str | os.PathLike = ".") -> str:
    """The report as one HTML document (no external assets, scripts or links)."""
    cfg = report.get("config") or {}
    machine = report.get("machine") or {}
    rows = mistakes_first(list(report.get("rows") or []))
    shown = rows[: max(0, max_images)]
    n_wrong = sum(1 for r in rows if r.get("error") or any(
        a.get("correct") is False for a in (r.get("attributes") or {}).values()))
    dot = " &middot; "
    meta = [
        dot.join([f"model: {_e(cfg.get('model', ''))}", f"data: {_e(cfg.get('data', ''))}"]),
        dot.join([f"{_e(report.get('n_images', len(rows)))} images, {_e(report.get('skipped', 0))} skipped",
                  f"backends: {_e(', '.join(cfg.get('backends') or []))}"]),
        _e(f"machine: {machine.get('cpu', 'unknown')}, {machine.get('cores', '?')} cores, "
           f"GPU {machine.get('gpu') or 'none'}"),
    ]
    meta_html = "".join(f'<p class="meta">{m}</p>' for m in meta)
    cards = "".join(_card(r, images_inline, Path(html_dir)) for r in shown)
    note = (f'<p class="meta">showing {len(shown)} of {len(rows)} images</p>' if len(shown) < len(rows) else "")
    note += f'<p class="meta">{n_wrong} image(s) with a mistake, listed first</p>'
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>pvlm-eval report</title><style>{_CSS}</style></head><body>"
        f"<h1>pvlm-eval report</h1>{meta_html}{_summary(report)}"
        f"<h2>Images</h2>{note}<div class=\"grid\">{cards}</div></body></html>\n"
    )


def write_html(report: Mapping[str, Any], path: str | os.PathLike, images_inline: bool = True,
               max_images: int = 200) -> Path:
    """Write :func:`render_html` to ``path`` atomically; returns the path.

    ``images_inline=False`` links the original image files by relative path instead of embedding
    thumbnails (smaller, but then the page needs the images beside it).
    """
    path = Path(path)
    return write_text(path, render_html(report, images_inline, max_images, path.parent.resolve()))


__all__ = ["mistakes_first", "render_html", "thumbnail_data_uri", "write_html"]
