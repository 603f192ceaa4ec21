"""One-page HTML report beside a report folder's files (metrics, heatmaps, choices, diagnostics).

The page is self-contained HTML that links the PNGs of the same folder by relative path, so
the folder can be moved or served as a whole; a browser opens ``report.html`` directly.
Check it in headless Chromium (the test suite does so when Chromium is installed)::

    chromium --headless --no-sandbox --disable-gpu --disable-background-networking \\
        --window-size=1200,2400 --screenshot=shot.png reports/school/report.html
"""

from __future__ import annotations

import datetime as _dt
import html
import json

__all__ = ["html_report"]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.9em}td,th{padding:.25em .8em;border:1px solid #ddd;
text-align:left}th{background:#f4f4f4}img{max-width:100%;border:1px solid #eee}
.warn{color:#8a4b00}.small{font-size:.85em;color:#555}code{background:#f4f4f4}
"""


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list, tuple)):
        return html.escape(json.dumps(value, default=str))
    return html.escape("-" if value is None else str(value))


def _table(rows: dict) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_cell(v)}</td></tr>"
                   for k, v in rows.items())
    return f"<table>{body}</table>"


def html_report(*, title: str, metrics: dict, hyper: dict, diagnostics: dict,
                warnings: list[str], images: list[tuple[str, str]],
                task_order: list[str] | None = None, command: str | None = None) -> str:
    """The HTML text of a fit report.

    ``metrics`` and ``hyper`` (the chosen hyperparameters) and ``diagnostics`` (convergence,
    R-hat, ESS, …) are flat dicts shown as tables; ``warnings`` the messages raised during the
    run (each shown); ``images`` (file name, caption) pairs of PNGs in the same folder;
    ``task_order`` the task names in the heatmap's order (listed when the heatmap cannot label
    every task); ``command`` the command line that made the report.
    """
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<p class='small'>written {_dt.datetime.now().isoformat(timespec='seconds')}"
             + (f" by <code>{html.escape(command)}</code>" if command else "") + "</p>",
             "<h2>Metrics</h2>", _table(metrics),
             "<h2>Hyperparameters</h2>", _table(hyper) if hyper else "<p>none</p>",
             "<h2>Diagnostics</h2>", _table(diagnostics)]
    if warnings:
        items = "".join(f"<li class='warn'>{html.escape(w)}</li>" for w in warnings)
        parts.append(f"<h2>Warnings ({len(warnings)})</h2><ul>{items}</ul>")
    else:
        parts.append("<p>No warnings were raised.</p>")
    for name, caption in images:
        parts.append(f"<h2>{html.escape(caption)}</h2><figure><img src='{html.escape(name)}' "
                     f"alt='{html.escape(caption)}'><figcaption class='small'>"
                     f"{html.escape(name)}</figcaption></figure>")
    if task_order:
        parts.append("<h2>Tasks in heatmap order</h2><p class='small'>"
                     + ", ".join(f"{k + 1}. {html.escape(str(t))}"
                                 for k, t in enumerate(task_order)) + "</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
