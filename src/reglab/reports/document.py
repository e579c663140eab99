"""A tiny document model rendered twice: Markdown (images beside it) and one self-contained HTML file.

Reports build a list of blocks once, so report.md and report.html can never disagree. Inline text is a small
markup that both renderers understand: **bold**, `code`, and backslash escapes (\\X stands for a literal X, for
any ASCII punctuation X, exactly as in CommonMark). Text from the user's data (class folders, file names,
variant names) must go through `esc` (or `code`) before it joins a block, so a `|`, `*`, `$`, `<`, a newline or a
terminal escape sequence in a folder name is shown as itself and never changes the layout. The HTML loads
nothing from the network: images are embedded as base64 data URIs, diagrams are inline SVG, the stylesheet is
inline.

A long document (CONTENTS_FROM top-level sections or more) gets a table of contents after its title and opening
paragraphs (a warning there stays the first thing read), before its first section, in both renderers: a link to
each top-level heading (its GitHub anchor in Markdown, its id in HTML).
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

from .. import atomic, signals
from ..rundir import REPORT_GENERATOR
from ..text import visible

# ------------------------------------------------------------------------------------------ escaping

# Markdown's meaningful characters inside a line (GitHub: | tables, $ math, ~ strikethrough, & entities).
_MD_SPECIAL = frozenset("\\`*_[]<>|$&~")
CONTENTS_FROM = 4  # top-level sections; a shorter document is read without a table of contents
_SAFE_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.,:=+/()-]*")


def esc(text) -> str:
    """User text as inline markup that shows exactly that text (made visible) in Markdown and HTML."""
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in visible(text))


def code(name) -> str:
    """A name in code style when that is safe in both renderers, otherwise escaped plain text."""
    s = visible(name)
    return f"`{s}`" if _SAFE_CODE.fullmatch(s) else esc(s)


def _tokens(text: str):
    """(kind, value) for inline markup: ("text", literal), ("code", literal), ("bold", None)."""
    i, n = 0, len(text)
    buf = []
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n and text[i + 1] in _MD_SPECIAL | frozenset("#!()+-.{}\"'=,:;?@^/"):
            buf.append(text[i + 1])
            i += 2
        elif ch == "`" and text.find("`", i + 1) > i:
            end = text.find("`", i + 1)
            if buf:
                yield "text", "".join(buf)
                buf = []
            yield "code", text[i + 1:end]
            i = end + 1
        elif text.startswith("**", i):
            if buf:
                yield "text", "".join(buf)
                buf = []
            yield "bold", None
            i += 2
        else:
            buf.append(ch)
            i += 1
    if buf:
        yield "text", "".join(buf)


def plain(text: str) -> str:
    """Inline markup as the plain text a reader sees (for the terminal, alt texts and figure labels)."""
    return "".join(v for k, v in _tokens(text) if k != "bold")


def inline_html(text: str) -> str:
    out, bold = [], False
    for kind, value in _tokens(text):
        if kind == "text":
            out.append(html.escape(value, quote=False))
        elif kind == "code":
            out.append(f"<code>{html.escape(value, quote=False)}</code>")
        else:
            out.append("</strong>" if bold else "<strong>")
            bold = not bold
    if bold:
        out.append("</strong>")
    return "".join(out)


# ------------------------------------------------------------------------------------------- blocks


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str
    kind: str = ""  # "warning": drawn as a warning box in HTML


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    id: str = ""  # HTML id, so tests and readers can find a table
    note: str = ""


@dataclass
class Figure:
    path: str  # relative to the document's folder
    caption: str


@dataclass
class Code:
    text: str
    lang: str = ""


@dataclass
class Diagram:
    """A model diagram: a ```mermaid block in Markdown, the inline SVG (drawn in Python) in HTML."""

    mermaid: str
    svg: str
    caption: str = ""


@dataclass
class Document:
    title: str
    blocks: list = field(default_factory=list)

    def h(self, level: int, text: str):
        self.blocks.append(Heading(level, text))

    def p(self, text: str, kind: str = ""):
        self.blocks.append(Para(text, kind))

    def warning(self, text: str):
        self.blocks.append(Para(text, "warning"))

    def bullets(self, items: list[str]):
        if items:
            self.blocks.append(Bullets(list(items)))

    def table(self, header, rows, id: str = "", note: str = ""):
        self.blocks.append(Table([str(h) for h in header], [[str(c) for c in r] for r in rows], id, note))

    def records(self, rows: list[dict], id: str = "", note: str = ""):
        """A table of rows given as {column: cell} (the first row's keys are the header)."""
        self.table(list(rows[0]), [list(r.values()) for r in rows], id, note)

    def figure(self, path: str, caption: str):
        self.blocks.append(Figure(path, caption))

    def code(self, text: str, lang: str = ""):
        self.blocks.append(Code(text, lang))

    def diagram(self, mermaid: str, svg: str, caption: str = ""):
        self.blocks.append(Diagram(mermaid, svg, caption))

    def contents(self) -> list[str]:
        """The top-level headings a table of contents lists (none for a short document)."""
        tops = [b.text for b in self.blocks if isinstance(b, Heading) and b.level == 1]
        return tops if len(tops) >= CONTENTS_FROM else []


# ------------------------------------------------------------------------------------------- Markdown


def _md_cell(text: str) -> str:
    """A table cell: a bare | (one of ours, not an escaped one) must not end the cell."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append(text[i:i + 2])
            i += 2
            continue
        out.append("\\|" if text[i] == "|" else text[i])
        i += 1
    return "".join(out)


def _first_section(doc: Document) -> Heading | None:
    """Where the table of contents goes: before the first top-level heading."""
    return next((b for b in doc.blocks if isinstance(b, Heading) and b.level == 1), None)


def _md_anchor(text: str) -> str:
    """GitHub's anchor for a heading: its shown text lowercased, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", plain(text).lower()).replace(" ", "-")


def to_markdown(doc: Document) -> str:
    out = [f"# {doc.title}", ""]
    for b in doc.blocks:
        if b is _first_section(doc) and doc.contents():
            out += ["**Contents:**", ""] + [f"- [{t}](#{_md_anchor(t)})" for t in doc.contents()] + [""]
        if isinstance(b, Heading):
            out += ["#" * (b.level + 1) + " " + b.text, ""]
        elif isinstance(b, Para):
            out += [f"> {b.text}" if b.kind == "warning" else b.text, ""]
        elif isinstance(b, Bullets):
            out += [f"- {item}" for item in b.items] + [""]
        elif isinstance(b, Table):
            out.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
            out.append("|" + "|".join("---" for _ in b.header) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out += ["", f"*{b.note}*", ""] if b.note else [""]
        elif isinstance(b, Figure):
            out += [f"![{Path(b.path).stem}]({b.path})", "", f"*{b.caption}*", ""]
        elif isinstance(b, Code):
            out += [f"```{b.lang}", b.text, "```", ""]
        elif isinstance(b, Diagram):
            out += ["```mermaid", b.mermaid, "```", ""] + ([f"*{b.caption}*", ""] if b.caption else [])
    return "\n".join(out).rstrip() + "\n"


# ----------------------------------------------------------------------------------------------- HTML

_CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d1f; background: #fff;
       max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 1.8em; border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.4em; margin-top: 2em; border-bottom: 1px solid #e5e5e5; padding-bottom: .2em; }
h3 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .92em; display: block; overflow-x: auto; }
th, td { border: 1px solid #d8d8d8; padding: 5px 9px; text-align: left; vertical-align: top; }
th { background: #f3f4f6; }
tr:nth-child(even) td { background: #fafafa; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: .9em; }
code { background: #f3f4f6; padding: 1px 4px; border-radius: 3px; }
pre { background: #f6f8fa; border: 1px solid #e1e4e8; padding: 10px 12px; overflow-x: auto; border-radius: 4px; }
figure { margin: 1.2em 0; }
figure img, figure svg { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, .note { color: #555; font-size: .9em; font-style: italic; }
.warning { background: #fff4e5; border-left: 4px solid #e8590c; padding: 8px 12px; }
nav.contents { background: #f8f9fa; border: 1px solid #e5e5e5; padding: 6px 16px; margin: 1em 0; }
nav.contents ul { margin: .3em 0; }
"""


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", plain(text).lower()).strip("-")


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def to_html(doc: Document, base_dir: Path) -> str:
    body = [f"<h1>{inline_html(doc.title)}</h1>"]
    for b in doc.blocks:
        if b is _first_section(doc) and doc.contents():
            links = "".join(f'<li><a href="#{_slug(t)}">{inline_html(t)}</a></li>' for t in doc.contents())
            body.append(f'<nav class="contents"><strong>Contents</strong><ul>{links}</ul></nav>')
        if isinstance(b, Heading):
            n = min(b.level + 1, 6)
            body.append(f'<h{n} id="{_slug(b.text)}">{inline_html(b.text)}</h{n}>')
        elif isinstance(b, Para):
            cls = f' class="{b.kind}"' if b.kind else ""
            body.append(f"<p{cls}>{inline_html(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{inline_html(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            attr = f' id="{html.escape(b.id)}"' if b.id else ""
            head = "".join(f"<th>{inline_html(h)}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f"<td>{inline_html(c)}</td>" for c in r) + "</tr>" for r in b.rows)
            body.append(f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            if b.note:
                body.append(f'<p class="note">{inline_html(b.note)}</p>')
        elif isinstance(b, Figure):
            src = _data_uri(base_dir / b.path)
            alt = html.escape(plain(b.caption))
            body.append(f'<figure><img src="{src}" alt="{alt}"><figcaption>{inline_html(b.caption)}</figcaption>'
                        "</figure>")
        elif isinstance(b, Code):
            cls = f' class="{html.escape(b.lang)}-source"' if b.lang else ""
            body.append(f"<pre{cls}>{html.escape(b.text)}</pre>")
        elif isinstance(b, Diagram):
            caption = f"<figcaption>{inline_html(b.caption)}</figcaption>" if b.caption else ""
            body.append(f'<figure class="diagram">{b.svg}{caption}</figure>')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"{REPORT_GENERATOR}"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(plain(doc.title))}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_document(doc: Document, folder: Path, stem: str = "report") -> tuple[Path, Path]:
    """Write FOLDER/STEM.md and FOLDER/STEM.html atomically, and as a pair: a signal before them stops both, one
    between them waits for the second (signals.held); figures must already exist under FOLDER."""
    folder = Path(folder)
    md_path, html_path = folder / f"{stem}.md", folder / f"{stem}.html"
    md, page = to_markdown(doc), to_html(doc, folder)
    signals.honour()
    with signals.held():
        atomic.write_text(md_path, md)
        atomic.write_text(html_path, page)
    return md_path, html_path
