"""A tiny document model rendered twice: Markdown (images beside it) and one self-contained HTML file.

Reports build a list of blocks once, so report.md and report.html can never disagree. Inline text
supports only **bold** and `code`, which both renderers understand. The HTML loads nothing from the
network: images are embedded as base64 data URIs and the stylesheet is inline.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

from .. import atomic


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str


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
    lang: str = ""  # "mermaid" becomes a ```mermaid block in Markdown and plain source in HTML


@dataclass
class Document:
    title: str
    blocks: list = field(default_factory=list)

    def h(self, level: int, text: str):
        self.blocks.append(Heading(level, text))

    def p(self, text: str):
        self.blocks.append(Para(text))

    def bullets(self, items: list[str]):
        self.blocks.append(Bullets(list(items)))

    def table(self, header, rows, id: str = "", note: str = ""):
        self.blocks.append(Table([str(h) for h in header], [[str(c) for c in r] for r in rows], id, note))

    def figure(self, path: str, caption: str):
        self.blocks.append(Figure(path, caption))

    def code(self, text: str, lang: str = ""):
        self.blocks.append(Code(text, lang))


# ------------------------------------------------------------------------------------------- Markdown


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def to_markdown(doc: Document) -> str:
    out = [f"# {doc.title}", ""]
    for b in doc.blocks:
        if isinstance(b, Heading):
            out += ["#" * (b.level + 1) + " " + b.text, ""]
        elif isinstance(b, Para):
            out += [b.text, ""]
        elif isinstance(b, Bullets):
            out += [f"- {item}" for item in b.items] + [""]
        elif isinstance(b, Table):
            out.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
            out.append("|" + "|".join("---" for _ in b.header) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out += ["", f"*{b.note}*", ""] if b.note else [""]
        elif isinstance(b, Figure):
            out += [f"![{b.caption}]({b.path})", "", f"*{b.caption}*", ""]
        elif isinstance(b, Code):
            out += [f"```{b.lang}", b.text, "```", ""]
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
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, .note { color: #555; font-size: .9em; font-style: italic; }
.label { color: #666; font-size: .85em; margin-bottom: 2px; }
"""


def _inline(text: str) -> str:
    s = html.escape(text, quote=False)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def to_html(doc: Document, base_dir: Path) -> str:
    body = [f"<h1>{_inline(doc.title)}</h1>"]
    for b in doc.blocks:
        if isinstance(b, Heading):
            n = min(b.level + 1, 6)
            body.append(f'<h{n} id="{_slug(b.text)}">{_inline(b.text)}</h{n}>')
        elif isinstance(b, Para):
            body.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            attr = f' id="{html.escape(b.id)}"' if b.id else ""
            head = "".join(f"<th>{_inline(h)}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in b.rows)
            body.append(f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            if b.note:
                body.append(f'<p class="note">{_inline(b.note)}</p>')
        elif isinstance(b, Figure):
            src = _data_uri(base_dir / b.path)
            alt = html.escape(b.caption)
            body.append(f'<figure><img src="{src}" alt="{alt}"><figcaption>{_inline(b.caption)}</figcaption></figure>')
        elif isinstance(b, Code):
            # mermaid.js cannot be loaded offline, so the diagram is shown as its source
            label = '<div class="label">Mermaid source</div>' if b.lang == "mermaid" else ""
            cls = f' class="{html.escape(b.lang)}-source"' if b.lang else ""
            body.append(f"{label}<pre{cls}>{html.escape(b.text)}</pre>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(doc.title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_document(doc: Document, folder: Path, stem: str = "report") -> tuple[Path, Path]:
    """Write FOLDER/STEM.md and FOLDER/STEM.html atomically; figures must already exist under FOLDER."""
    folder = Path(folder)
    md_path, html_path = folder / f"{stem}.md", folder / f"{stem}.html"
    atomic.write_text(md_path, to_markdown(doc))
    atomic.write_text(html_path, to_html(doc, folder))
    return md_path, html_path
