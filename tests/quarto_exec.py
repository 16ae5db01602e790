"""Execute a Quarto book's Python cells the way ``quarto render`` does, without Quarto.

Used by the tests: every chapter's cells (and inline ``{python}`` expressions) run in order
in a fresh Jupyter kernel with the project folder as working directory (``execute-dir: project``).
"""

from __future__ import annotations

import json
import os
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


# What Quarto's Jupyter engine runs first in every Python kernel (quarto-cli,
# src/resources/jupyter/lang/python/setup.py): matplotlib and pandas defaults, the list of imported
# module files with their mtimes (a kept-alive kernel is restarted when one of them changes), the working
# directory, then ``%reset`` so a kept-alive kernel starts each render with an empty namespace.
QUARTO_SETUP = r"""
import os, sys, types, json
fig_width, fig_height, fig_format, fig_dpi = 7, 5, 'retina', 96
try:
  import matplotlib.pyplot as plt
  plt.rcParams['figure.figsize'] = (fig_width, fig_height)
  plt.rcParams['figure.dpi'] = fig_dpi
  plt.rcParams['savefig.dpi'] = fig_dpi
  from matplotlib_inline.backend_inline import set_matplotlib_formats
  set_matplotlib_formats(fig_format)
except Exception:
  pass
try:
  import pandas as pd
except Exception:
  pass
kernel_deps = dict()
for module in list(sys.modules.values()):
  if not isinstance(module, types.ModuleType):
    continue
  path = getattr(module, "__file__", None)
  if not path:
    continue
  if path.endswith(".pyc") or path.endswith(".pyo"):
    path = path[:-1]
  if not os.path.exists(path):
    continue
  kernel_deps[path] = os.stat(path).st_mtime
print(json.dumps(kernel_deps))
os.chdir(r'{cwd}')
%reset -f
"""
# Quarto's cleanup cell (lang/python/cleanup.py) reports the module files again after the cells ran, so
# the daemon knows the package modules the chapter imported.
QUARTO_CLEANUP = r"""
import os as _os, sys as _sys, types as _types, json as _json
_deps = dict()
for _m in list(_sys.modules.values()):
  _p = getattr(_m, "__file__", None) if isinstance(_m, _types.ModuleType) else None
  if _p and _p.endswith((".pyc", ".pyo")):
    _p = _p[:-1]
  if _p and _os.path.exists(_p):
    _deps[_p] = _os.stat(_p).st_mtime
print(_json.dumps(_deps))
"""


def has_code(source: str) -> bool:
    """Whether Quarto runs the file through Jupyter: a ``{python}`` cell or inline expression (else markdown)."""
    return bool(CELL_RE.search(source) or INLINE_RE.search(source))


def _setup_cell(project: Path) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(QUARTO_SETUP.replace("{cwd}", str(project)))


def _collect(path: Path, source: str, nb, inline_idx: list[int], offset: int) -> ExecutedChapter:
    outputs, inline_values = [], []
    for i, cell in enumerate(nb.cells[offset:]):
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


def execute_chapter(path: Path, project: Path, timeout: int = 900, *, daemon: KernelDaemon | None = None,
                    quarto_setup: bool = True) -> ExecutedChapter:
    """Run one chapter as ``quarto render`` does (cwd = project) and collect its text outputs.

    A file without Python code is not executed (Quarto's markdown engine). Otherwise the cells run after
    Quarto's setup cell, in a fresh kernel (``quarto render --no-execute-daemon``, and every render in CI)
    or, with ``daemon``, in the chapter's kept-alive kernel (Quarto's default in an interactive session).
    """
    source = path.read_text(encoding="utf-8")
    nb, inline_idx = notebook_from_qmd(source)
    if not has_code(source):
        return ExecutedChapter(path, source, [], [])
    offset = 0
    if quarto_setup:
        nb.cells.insert(0, _setup_cell(project))
        offset = 1
    if daemon is not None:
        daemon.execute(path, nb, timeout)
    else:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(project)}}).execute()
    return _collect(path, source, nb, inline_idx, offset)


class KernelDaemon:
    """One kept-alive kernel per document, as Quarto's Jupyter daemon (``execute: daemon``) keeps them.

    Quarto starts a kernel per document on the first render and reuses it on the next renders (300 s
    by default, in interactive sessions); its setup cell resets the namespace, and a kernel whose
    imported module files have changed since the last render is restarted (``kernel_deps``), so edited
    package code is always re-imported. Use as a context manager so the kernels stop.
    """

    def __init__(self, project: Path):
        self.project = Path(project)
        self._kernels: dict[Path, object] = {}
        self._clients: dict[Path, object] = {}
        self._deps: dict[Path, dict[str, float]] = {}
        self.restarts = 0

    def _start(self, path: Path):
        from jupyter_client.manager import KernelManager

        km = KernelManager(kernel_name="python3")
        km.start_kernel(cwd=str(self.project))
        self._kernels[path] = km
        self._deps.pop(path, None)
        self._clients.pop(path, None)
        return km

    def execute(self, path: Path, nb, timeout: int = 900) -> None:
        path = Path(path).resolve()
        km = self._kernels.get(path)
        if km is not None and self._stale(path):
            self._stop(path)
            km = None
            self.restarts += 1
        if km is None:
            km = self._start(path)
        nb.cells.append(nbformat.v4.new_code_cell(QUARTO_CLEANUP))
        client = NotebookClient(nb, km=km, timeout=timeout, resources={"metadata": {"path": str(self.project)}})
        client.kc = self._clients.get(path)  # Quarto's server keeps its client connected between renders
        try:
            client.execute(cleanup_kc=False)  # keep the kernel and the client
        finally:
            cleanup = nb.cells.pop()
            self._clients[path] = client.kc
        try:
            self._deps[path] = json.loads("".join(o.get("text", "") for o in cleanup.get("outputs", [])
                                                  if o.get("name") == "stdout"))
        except ValueError:
            self._deps.pop(path, None)

    def _stale(self, path: Path) -> bool:
        """Quarto's check: has a module file the kernel imported changed (or gone) since its last render?"""
        deps = self._deps.get(path)
        if deps is None:
            return True
        for file, mtime in deps.items():
            try:
                if os.stat(file).st_mtime != mtime:
                    return True
            except OSError:
                return True
        return False

    def _stop(self, path: Path) -> None:
        kc, km = self._clients.pop(path, None), self._kernels.pop(path, None)
        try:
            if kc is not None:
                kc.stop_channels()
            if km is not None:
                km.shutdown_kernel(now=True)
        except Exception:  # noqa: BLE001 - best effort
            pass

    def close(self) -> None:
        for path in list(self._kernels):
            self._stop(path)

    def __enter__(self) -> KernelDaemon:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
