"""Render report sections to Markdown (report.md) and self-contained HTML (report.html, PNGs inlined)."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pandas as pd

from .document import MISSING, Figure, Section, Table


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# --- markdown ------------------------------------------------------------------------------------

def _md_cell(value) -> str:
    text = MISSING if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)
    return text.replace("|", "\\|").replace("\n", "<br>") or " "


def markdown_table(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(_md_cell(c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_md_cell(v) for v in row) + " |")
    return "\n".join(lines)


def to_markdown(title: str, intro: list[str], sections: list[Section]) -> str:
    out = [f"# {title}", ""]
    out += [*intro, ""]
    out.append("Contents: " + " · ".join(f"[{s.title}](#{slug(s.title)})" for s in sections))
    out.append("")
    for sec in sections:
        out += [f"## {sec.title}", ""]
        for item in sec.items:
            if isinstance(item, Table):
                if item.caption:
                    out += [f"*{item.caption}*", ""]
                out += [markdown_table(item.df), ""]
                if item.csv:
                    out += [f"Data: [{item.csv}]({item.csv})", ""]
            elif isinstance(item, Figure):
                out += [f"![{item.caption}]({item.png})", "", f"*{item.caption}* "
                        f"([PDF]({item.pdf}), [data CSV]({item.csv}))", ""]
            else:
                out += [str(item), ""]
    return "\n".join(out).rstrip() + "\n"


# --- html ----------------------------------------------------------------------------------------

CSS = """
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; font-size: 14px; margin: 2em auto;
       max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: .2em;
margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 12px; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0; } figure img { max-width: 100%; } figcaption { font-size: 12px; color: #444; }
code { background: #f3f3f3; padding: 0 3px; } .nodata { color: #888; font-style: italic; }
"""


def _inline(text: str) -> str:
    """Escape text and turn `code` and [label](href) into HTML."""
    escaped = html.escape(str(text))
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    escaped = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', escaped)
    return escaped


def _html_table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, escape=True, border=0, na_rep=MISSING)


def to_html(title: str, intro: list[str], sections: list[Section], out_dir: Path) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title>", f"<style>{CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{_inline(p)}</p>" for p in intro]
    parts.append("<p>Contents: " + " · ".join(
        f'<a href="#{slug(s.title)}">{html.escape(s.title)}</a>' for s in sections) + "</p>")
    for sec in sections:
        parts.append(f'<h2 id="{slug(sec.title)}">{html.escape(sec.title)}</h2>')
        for item in sec.items:
            if isinstance(item, Table):
                if item.caption:
                    parts.append(f"<p><em>{_inline(item.caption)}</em></p>")
                parts.append(_html_table(item.df))
                if item.csv:
                    parts.append(f'<p>Data: <a href="{html.escape(item.csv)}">{html.escape(item.csv)}</a></p>')
            elif isinstance(item, Figure):
                data = base64.b64encode((Path(out_dir) / item.png).read_bytes()).decode("ascii")
                parts.append(
                    f'<figure><img alt="{html.escape(item.caption)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{_inline(item.caption)} "
                    f'(<a href="{html.escape(item.pdf)}">PDF</a>, <a href="{html.escape(item.csv)}">data CSV</a>)'
                    "</figcaption></figure>")
            else:
                cls = ' class="nodata"' if str(item).startswith("No data") else ""
                parts.append(f"<p{cls}>{_inline(item)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
