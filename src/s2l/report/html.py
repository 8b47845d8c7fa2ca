"""Small HTML builders for the report: escaped text, tables, inline figures, the page around them.

The page is one file: CSS inline, images as base64 `data:` URIs, no script, no external reference.
"""

from __future__ import annotations

import base64
import html
from typing import Iterable

CSS = """
:root { --ink: #1d2330; --muted: #5b6472; --rule: #d9dde3; --accent: #0072B2; --note: #fff7e0; }
* { box-sizing: border-box; }
body { margin: 0; background: #f4f5f7; color: var(--ink);
       font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "DejaVu Sans", sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 21px; margin: 36px 0 8px; padding-top: 12px; border-top: 2px solid var(--rule); }
h3 { font-size: 17px; margin: 22px 0 6px; }
p { margin: 8px 0; }
.lead { color: var(--muted); margin-bottom: 16px; }
nav { font-size: 14px; margin: 12px 0 8px; display: flex; flex-wrap: wrap; gap: 4px 16px; }
nav a { color: var(--accent); white-space: nowrap; text-decoration: none; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 13px;
              overflow-wrap: anywhere; }
.table-wrap { overflow-x: auto; margin: 8px 0 14px; }
table { border-collapse: collapse; font-size: 14px; min-width: 40%; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--rule); text-align: left; vertical-align: top; }
th { background: #f0f2f5; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv th { width: 230px; background: none; font-weight: 600; color: var(--muted); }
table.kv td.num { text-align: left; }
figure { margin: 12px 0 18px; }
figure img { display: block; width: 100%; height: auto; border: 1px solid var(--rule); }
figure.narrow img { width: auto; max-width: 100%; margin: 0 auto; }
figcaption { font-size: 13.5px; color: var(--muted); margin-top: 4px; }
.note { background: var(--note); border-left: 4px solid #E69F00; padding: 8px 12px; margin: 10px 0; }
.missing { background: #f0f2f5; border-left: 4px solid #9a9a9a; padding: 10px 12px; margin: 10px 0; }
footer { color: var(--muted); font-size: 13px; margin-top: 40px; }
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def num(value, digits: int = 3) -> str:
    """A number as the report prints it: integers plainly, floats to `digits` places, '—' for none."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) or (hasattr(value, "dtype") and getattr(value, "dtype").kind in "iu"):
        return str(int(value))
    try:
        f = float(value)
    except (TypeError, ValueError):
        return esc(value)
    if f != f:
        return "—"
    if f == int(f) and abs(f) < 1e15 and digits == 0:
        return str(int(f))
    return f"{f:.{digits}f}"


def pct(part: int, whole: int) -> "Cell":
    return Cell(f"{100.0 * part / whole:.1f}%" if whole else "—", numeric=True)


class Cell:
    """A table cell: `text` is HTML-escaped unless `raw`; numbers align right."""

    def __init__(self, text, numeric: bool = False, raw: bool = False, key: str | None = None):
        self.text, self.numeric, self.raw, self.key = text, numeric, raw, key

    def render(self, tag: str = "td") -> str:
        attrs = ' class="num"' if self.numeric else ""
        if self.key:
            attrs += f' data-key="{esc(self.key)}"'
        body = self.text if self.raw else esc(self.text)
        return f"<{tag}{attrs}>{body}</{tag}>"


def cell(value, digits: int = 3, key: str | None = None) -> Cell:
    if isinstance(value, Cell):
        return value
    numeric = not isinstance(value, str) and value is not None and not isinstance(value, bool)
    return Cell(num(value, digits) if numeric or value is None else value, numeric=numeric, key=key)


def table(header: Iterable, rows: Iterable[Iterable], table_id: str | None = None, digits: int = 3,
          caption: str | None = None) -> str:
    header = [h if isinstance(h, Cell) else Cell(h) for h in header]
    head = "".join(h.render("th") for h in header)
    body = "".join("<tr>" + "".join(cell(v, digits).render() for v in row) + "</tr>" for row in rows)
    ident = f' id="{esc(table_id)}"' if table_id else ""
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (f'<div class="table-wrap"><table{ident}>{cap}<thead><tr>{head}</tr></thead>'
            f'<tbody>{body}</tbody></table></div>')


def kv_table(pairs: Iterable[tuple[str, object]], table_id: str | None = None) -> str:
    """Two columns, a fact per row; values that are `Cell`s keep their formatting."""
    ident = f' id="{esc(table_id)}"' if table_id else ""
    rows = "".join(f"<tr><th>{esc(k)}</th>{cell(v).render()}</tr>" for k, v in pairs)
    return f'<div class="table-wrap"><table class="kv"{ident}><tbody>{rows}</tbody></table></div>'


def mono(text) -> Cell:
    return Cell(f"<code>{esc(text)}</code>", raw=True)


def figure(png: bytes, alt: str, caption: str | None = None, name: str | None = None, narrow: bool = False) -> str:
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    cls = ' class="narrow"' if narrow else ""
    fig_name = f' data-file="{esc(name)}"' if name else ""
    return f'<figure{cls}{fig_name}><img alt="{esc(alt)}" src="data:image/png;base64,{data}">{cap}</figure>'


def para(text: str) -> str:
    return f"<p>{text}</p>"


def note(text: str) -> str:
    return f'<div class="note">{text}</div>'


def missing(text: str) -> str:
    return f'<div class="missing"><strong>Not shown:</strong> {text}</div>'


def section(section_id: str, title: str, body: str) -> str:
    return f'<section id="{esc(section_id)}"><h2>{esc(title)}</h2>{body}</section>'


def page(title: str, lead: str, sections: list[tuple[str, str, str]], footer: str) -> str:
    nav = "".join(f'<a href="#{esc(i)}">{esc(t)}</a>' for i, t, _ in sections)
    body = "".join(section(i, t, b) for i, t, b in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
        f"<h1>{esc(title)}</h1><p class=\"lead\">{lead}</p><nav>{nav}</nav>{body}"
        f"<footer>{footer}</footer></main></body></html>\n"
    )
