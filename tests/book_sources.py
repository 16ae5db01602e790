"""A Quarto book's chapters as Quarto reads them after the pre-render step, without Quarto.

The chapters execute no code (``analysis/pages.py``): each ``::: {.part file="_parts/<chapter>/<part>.md"} :::`` is
replaced by the part the pre-render step writes for the results, and each ``[r.<chapter>.<value>]{.value}`` or
``[provenance.<value>]{.value}`` by its value (what ``analysis/values.lua`` does), so the tests can check the text a
reader gets (cross-references, citations, numbers) on any results without a render. The real renders are checked
in ``tests/test_render.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

INCLUDE_RE = re.compile(r"^:::+ \{\.part file=\"_parts/([^/\"]+)/([^\"]+)\.md\"\}\n:::+ *$", re.M)
VALUE_RE = re.compile(r"\[((?:r|provenance)(?:\.[A-Za-z0-9_-]+)+)\]\{\.value\}")


@dataclass
class ExpandedChapter:
    path: Path
    source: str
    outputs: list[str]  # the parts it includes, in order
    inline_values: list[str]  # the values it cites, in order
    text: str  # the source with both filled in

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


def _lookup(values: dict, key: str) -> str:
    node = values
    for name in key.split("."):
        node = node[name]
    return str(node)


def expand_chapter(path: Path, project: Path, res=None) -> ExpandedChapter:
    """``path`` with its parts and values for ``res`` (default: the results of ``$ANALYSIS_CONFIG``); a part or
    value the pre-render step does not write raises ``KeyError`` naming it."""
    from analysis import pages
    from analysis.provenance import provenance

    if res is None:
        from analysis import load_results

        res = load_results()
    parts = pages.chapter_parts(res, project)
    values = {"r": pages.chapter_values(res), "provenance": provenance(project)}
    source = Path(path).read_text(encoding="utf-8")

    def part(m):
        try:
            return parts[m.group(1)][m.group(2)]
        except KeyError:
            raise KeyError(f"{path}: no part {m.group(1)}/{m.group(2)} is written for these results") from None

    def value(m):
        try:
            return _lookup(values, m.group(1))
        except KeyError:
            raise KeyError(f"{path}: no value {m.group(1)} is written for these results") from None

    outputs = [part(m) for m in INCLUDE_RE.finditer(source)]
    inline = [value(m) for m in VALUE_RE.finditer(source)]
    text = VALUE_RE.sub(value, INCLUDE_RE.sub(part, source))
    return ExpandedChapter(Path(path), source, outputs, inline, text)


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
