"""Execute a Quarto book's Python cells the way ``quarto render`` does, without Quarto.

Used by the tests: every chapter's cells (and inline ``{python}`` expressions) run in order
in a fresh Jupyter kernel with the project folder as working directory (``execute-dir: project``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nbformat
import yaml
from nbclient import NotebookClient

CELL_RE = re.compile(r"^```\{python\}[^\n]*\n(.*?)^```\s*$", re.S | re.M)
INLINE_RE = re.compile(r"`\{python\}\s+([^`]+)`")


@dataclass
class ExecutedChapter:
    path: Path
    source: str
    outputs: list[str]  # text/markdown/plain outputs, in order
    inline_values: list[str]


def book_chapters(project: Path, profile: str | None = None) -> list[Path]:
    """The .qmd files of the book for a profile (default: the project's default profile), in order."""
    cfg = yaml.safe_load((project / "_quarto.yml").read_text())
    profile = profile or cfg.get("profile", {}).get("default")
    book = dict(cfg.get("book", {}))
    if profile:  # Quarto merges the profile's config over _quarto.yml; lists are appended
        extra = yaml.safe_load((project / f"_quarto-{profile}.yml").read_text()).get("book", {})
        for key in ("chapters", "appendices"):
            book[key] = list(book.get(key, [])) + list(extra.get(key, []))
    items = list(book.get("chapters", [])) + list(book.get("appendices", []))
    out = []
    for item in items:
        if isinstance(item, dict):  # part: {part: ..., chapters: [...]}
            out += [project / c for c in item.get("chapters", [])]
        else:
            out.append(project / item)
    return out


def notebook_from_qmd(source: str) -> tuple[nbformat.NotebookNode, list[int]]:
    """Code cells and inline expressions, in document order. Returns the notebook and the inline cell indices."""
    nb = nbformat.v4.new_notebook()
    inline_cells = []
    pos = 0
    events = []
    for m in CELL_RE.finditer(source):
        for im in INLINE_RE.finditer(source, pos, m.start()):
            events.append(("inline", im.group(1)))
        events.append(("cell", m.group(1)))
        pos = m.end()
    for im in INLINE_RE.finditer(source, pos):
        events.append(("inline", im.group(1)))
    for kind, code in events:
        if kind == "cell":
            nb.cells.append(nbformat.v4.new_code_cell(code))
        else:
            inline_cells.append(len(nb.cells))
            # Quarto inserts a Markdown object's text as markdown, anything else as its str()
            nb.cells.append(nbformat.v4.new_code_cell(
                f"_v = ({code.strip()})\nprint(_v.data if hasattr(_v, '_repr_markdown_') else str(_v))"))
    return nb, inline_cells


def execute_chapter(path: Path, project: Path, timeout: int = 900) -> ExecutedChapter:
    """Run one chapter in a fresh kernel (cwd = project) and collect its text outputs."""
    source = path.read_text(encoding="utf-8")
    nb, inline_idx = notebook_from_qmd(source)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(project)}}).execute()
    outputs, inline_values = [], []
    for i, cell in enumerate(nb.cells):
        texts = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                texts.append(out["text"])
            elif "data" in out:
                data = out["data"]
                texts.append(data.get("text/markdown") or data.get("text/plain", ""))
        joined = "".join(texts)
        (inline_values if i in inline_idx else outputs).append(joined)
    return ExecutedChapter(path, source, outputs, inline_values)


_DIV_OPEN = re.compile(r"^(:{3,})\s*\{(.*)\}\s*$")
_DIV_CLOSE = re.compile(r"^:{3,}\s*$")


def visible_text(text: str, profile: str) -> str:
    """``text`` without the divs that Quarto hides for ``profile`` (``when-profile`` / ``unless-profile``)."""
    out, stack = [], []  # stack of booleans: is this div hidden?
    for line in text.splitlines():
        m = _DIV_OPEN.match(line)
        if m:
            attrs = m.group(2)
            when = re.search(r'when-profile="([^"]+)"', attrs)
            unless = re.search(r'unless-profile="([^"]+)"', attrs)
            hidden = bool((when and profile not in when.group(1).split(","))
                          or (unless and profile in unless.group(1).split(",")))
            stack.append(hidden)
            if not any(stack):
                out.append(line)
            continue
        if _DIV_CLOSE.match(line) and stack:
            hidden = any(stack)
            stack.pop()
            if not hidden:
                out.append(line)
            continue
        if not any(stack):
            out.append(line)
    return "\n".join(out)


LABEL_RE = re.compile(r"\{#((?:fig|tbl|sec)-[A-Za-z0-9_-]+)[^}]*\}|#\|\s*label:\s*((?:fig|tbl|sec)-[A-Za-z0-9_-]+)")
REF_RE = re.compile(r"(?<![\w@.])@((?:fig|tbl|sec)-[A-Za-z0-9_-]*[A-Za-z0-9])")
CITE_RE = re.compile(r"(?<![\w@.`])@([A-Za-z][A-Za-z0-9_:-]*[A-Za-z0-9])")


def labels_in(text: str) -> set[str]:
    return {a or b for a, b in LABEL_RE.findall(text)}


def refs_in(text: str) -> set[str]:
    return set(REF_RE.findall(text))


def citations_in(text: str) -> set[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code is not prose
    return {k for k in CITE_RE.findall(text) if not re.match(r"(fig|tbl|sec|eq|lst)-", k)}


def bib_keys(bib: Path) -> set[str]:
    return set(re.findall(r"^@\w+\{([^,\s]+),", bib.read_text(encoding="utf-8"), re.M))
