"""The report as a list of blocks (headings, paragraphs, lists, tables, figures), rendered twice:
as Markdown beside its figure files, and as one self-contained HTML page — figures as `data:` URIs,
the style inline, every text escaped — that reads offline.

Inline markup in text is limited to `code` and **bold**; the HTML renderer escapes the text first and
only then turns those two marks into tags, so no text can inject markup.
"""

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

MISSING = "—"


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass
class Table:
    """`header`: one or more header rows (a group row above the titles is allowed; "" cells
    continue the group to their left); `rows`: body rows of plain strings."""

    header: list[list[str]]
    rows: list[list[str]]
    caption: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Figure:
    path: Path  # the image file (PNG or SVG), under the report folder
    caption: str


Block = Heading | Paragraph | Bullets | Table | Figure


# ------------------------------------------------------------------------------------------ Markdown


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block], base: Path) -> str:
    """Markdown; figures are linked relative to `base` (the folder report.md is written to)."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Paragraph):
            out += [b.text, ""]
        elif isinstance(b, Bullets):
            out += [f"- {item}" for item in b.items] + [""]
        elif isinstance(b, Table):
            if b.caption:
                out += [b.caption, ""]
            width = max(len(r) for r in [*b.header, *b.rows])
            head = [*b.header[0], *[""] * (width - len(b.header[0]))]
            out.append("| " + " | ".join(_md_cell(c) for c in head) + " |")
            out.append("|" + "---|" * width)
            for row in b.header[1:]:  # Markdown has one header row: the titles under the groups go in bold
                out.append("| " + " | ".join(f"**{_md_cell(c)}**" if c else "" for c in row) + " |")
            out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in b.rows]
            out.append("")
            out += [*(f"{note}" for note in b.notes), *([""] if b.notes else [])]
        else:
            out += [f"![{b.caption}]({b.path.relative_to(base).as_posix()})", "", f"*{b.caption}*", ""]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ HTML

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 75rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
th, td { border: 1px solid #bbb; padding: 0.25rem 0.5rem; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
th { background: #f0f0f0; }
td.missing { color: #999; }
caption { text-align: left; font-weight: 600; padding: 0.25rem 0; }
code { background: #f4f4f4; padding: 0 0.2rem; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; }
figcaption { font-style: italic; }
.note { font-size: 0.85rem; color: #444; }
"""


def inline_html(text: str) -> str:
    """Escaped text with `code` and **bold** as tags."""
    out = html.escape(text, quote=True)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def data_uri(path: Path) -> str:
    mime = "image/svg+xml" if path.suffix == ".svg" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _header_row(row: list[str]) -> str:
    cells: list[tuple[str, int]] = []
    for c in row:
        if c == "" and cells:
            cells[-1] = (cells[-1][0], cells[-1][1] + 1)
        else:
            cells.append((c, 1))
    return (
        "<tr>"
        + "".join(
            f'<th colspan="{n}">{inline_html(c)}</th>' if n > 1 else f"<th>{inline_html(c)}</th>" for c, n in cells
        )
        + "</tr>"
    )


def _body_cell(text: str) -> str:
    numeric = re.fullmatch(r"[-+−]?[\d.,]+( ± [\d.]+)?( \[[^\]]*\])?%?", text) is not None
    css = "missing" if text.startswith(MISSING) else ("" if numeric else "text")
    attr = f' class="{css}"' if css else ""
    return f"<td{attr}>{inline_html(text)}</td>"


def to_html(blocks: list[Block], title: str) -> str:
    """One page with everything inline: no external style sheet, script or image."""
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{inline_html(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            body.append(f"<p>{inline_html(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{inline_html(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            rows = "".join(_header_row(r) for r in b.header)
            rows += "".join("<tr>" + "".join(_body_cell(c) for c in r) + "</tr>" for r in b.rows)
            caption = f"<caption>{inline_html(b.caption)}</caption>" if b.caption else ""
            body.append(f"<table>{caption}{rows}</table>")
            body += [f'<p class="note">{inline_html(n)}</p>' for n in b.notes]
        else:
            body.append(f'<figure><img alt="{html.escape(b.caption, quote=True)}" src="{data_uri(b.path)}">'
                        f"<figcaption>{inline_html(b.caption)}</figcaption></figure>")  # fmt: skip
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
