"""``fmri-report render``: render the book, and after a prose edit only what the edit changed.

A plain ``quarto render`` of this book renders every HTML page, the typst PDF and the Word file whatever changed
(about 20 s on 2 cores after a one-word edit, against Quarto's own floor of 8 s for a text-only book of the same
size). :func:`render_book` renders the same outputs in less:

- **Only the edited pages.** The last render through this command leaves a stamp next to ``_freeze/``
  (:data:`STAMP`): the source of every chapter as it was when the render started, the configuration files, the
  pre-render hook's state (its stamp of every file of the results, figures, tables and chapter parts, and the
  commit and day the colophon shows), the date and the stat of every file in ``_book/``. When the only difference since then is prose in
  some chapters (lines outside code cells and front matter that are not headings, div fences, labels, inline
  code or shortcodes, with the same cross-references and citations in the same order), those chapters' HTML pages
  are rendered alone (``quarto render <chapters> --to html --use-freezer``: Quarto then renders the page, updates
  the cross-reference index and the pages' entries of ``search.json`` with the code of a whole render, and leaves
  the other pages, whose sidebar, numbering and links cannot have changed, as they are). The pages' old search
  entries are taken out first and Quarto's new ones put back in their place (:func:`detach_search_entries`), so
  the index is the one a whole render writes; in doubt, the HTML book is rendered whole. Anything else, or any
  doubt (no stamp, an output written by another command, ``.quarto/`` gone, a new day for ``date: today``, a
  chapter or output folder that is not a plain path inside the project), renders the whole book.
- **No kernel for a prose edit.** The report's own chapters execute no code (:mod:`analysis.pages`); a chapter of
  yours that does would be re-executed by Quarto after an edit (a Jupyter kernel, about 3 s). A prose
  line is not code, so its executed result is the frozen one with the same lines changed: :func:`patch_frozen`
  makes that edit in ``_freeze/<chapter>/execute-results/html.json`` (the PDF's and Word's frozen results are
  links to it when the render made them so) and records the new source's hash, so Quarto thaws it. The changed lines must
  be found exactly once, with their unchanged prose neighbours, in the frozen Markdown; otherwise the chapter is
  executed as Quarto would.
- **The PDF and the Word file beside the HTML.** Both are books of the whole report, so every render makes them
  again from the frozen results. Each is rendered in a copy of the project under ``.quarto/`` (:func:`print_copy`:
  the sources and ``_freeze/`` copied, every other entry linked, the ``_quarto.yml`` with only that format and no
  pre-render hook, which has run already), so they run in parallel with the HTML render without sharing Quarto's
  scratch files: beside the edited pages, or, for a whole render, from the moment the last chapter is frozen
  while the HTML render finishes its last pages. (One copy renders both when there is not a core for each
  Quarto process, on 2 cores or a busy machine: 8.6 s against 11.1 s for a prose edit on 2 cores.) A copy starts only when every chapter's frozen result matches its source, and its output
  is used only if nothing was executed there and no frozen result changed meanwhile; the PDF and the Word file are
  then moved into ``_book/``. Otherwise the format is rendered in place (``quarto render --to <format> --no-clean
  --use-freezer``).

Arguments other than ``--to html|all`` and ``--profile`` are passed to a plain ``quarto render`` unchanged.
``tests/test_render_incremental.py`` checks a one-word edit (one page rendered, the word in the HTML, the search
index, the PDF and the Word file, the other pages untouched) and the fallbacks; ``bench/bench_render.py`` times
it beside the plain ``quarto render``.
"""

from __future__ import annotations

import datetime
import difflib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .files import write_file

__all__ = ["STAMP", "Plan", "render_book", "plan_render", "patch_frozen", "signature", "book_chapters",
           "print_copy", "is_book_project", "profile_hook", "hook_of_render", "source_state", "write_stamp", "unsafe_layout", "detach_search_entries",
           "reattach_search_entries"]

STAMP = ".render-stamp.json"
"""The last render's stamp, in the project folder next to ``_freeze/`` (gitignored)."""

STAMP_VERSION = 1
PRINT_FORMATS = {"typst": ".pdf", "docx": ".docx"}  # the whole-book formats and their output's extension
FREEZE_NAMES = {"html": "html.json", "typst": "typ.json", "docx": "docx.json"}
HOOK = "python -m analysis --prerender"  # the pre-render hook this module knows how to replace
CONFIG_SUFFIXES = (".yml", ".yaml", ".bib", ".csl", ".scss", ".css", ".lua", ".json")
SOURCE_SUFFIXES = (".qmd", ".md", ".ipynb", ".Rmd")
KERNEL_STARTED = "Starting python3 kernel"

# a line that is not plain prose: headings, fenced divs, attributes and labels, inline code of any engine,
# shortcodes and includes, raw attributes, setext underlines and horizontal rules
_STRUCTURAL = re.compile(r"^\s{0,3}(#|:::|[=\-*_]{3,}\s*$)|\{#|`\{|\{\{<|\{=")
_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_AT = re.compile(r"(?<![\w])-?@[A-Za-z0-9_][\w:.#$%&+?<>~/-]*")


# ----------------------------------------------------------------------------- the book's chapters and profiles

def is_book_project(project: Path) -> bool:
    """A Quarto project folder whose pre-render hook is this package's (the only one :func:`render_book` replaces)."""
    try:
        config = _read_yaml(Path(project) / "_quarto.yml")
    except (OSError, ValueError):
        return False
    hook = (config.get("project") or {}).get("pre-render")
    hooks = [hook] if isinstance(hook, str) else list(hook or [])
    return (config.get("project") or {}).get("type") == "book" and hooks == [HOOK]


def profile_hook(project: Path, profile: str | None) -> str | None:
    """The pre-render hook an active profile sets instead of the book's (e.g. the study report's), or None."""
    hook = None
    for name in active_profiles(project, profile):
        path = Path(project) / f"_quarto-{name}.yml"
        if path.exists():
            found = (_read_yaml(path).get("project") or {}).get("pre-render")
            if found and found != HOOK and [found] != [HOOK]:
                hook = found if isinstance(found, str) else " && ".join(map(str, found))
    return hook


def hook_of_render(project: Path, extra: list[str]) -> str | None:
    """:func:`profile_hook` for the arguments of ``fmri-report render`` (None for arguments it passes on)."""
    parsed = _parse(extra)
    return profile_hook(project, parsed[0]) if parsed is not None else None


def _read_yaml(path: Path) -> dict:
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a YAML mapping")
    return data


def active_profiles(project: Path, profile: str | None) -> list[str]:
    """The Quarto profiles a render uses: ``--profile``, else ``$QUARTO_PROFILE``, else ``profile.default``."""
    chosen = profile or os.environ.get("QUARTO_PROFILE")
    if not chosen:
        default = (_read_yaml(Path(project) / "_quarto.yml").get("profile") or {}).get("default")
        chosen = ",".join(default) if isinstance(default, list) else (default or "")
    return [p.strip() for p in str(chosen).split(",") if p.strip()]


def book_chapters(project: Path, profile: str | None = None) -> list[str]:
    """Every file of the book (chapters, then appendices, parts included) for the active profiles, in order."""
    project = Path(project)
    configs = [_read_yaml(project / "_quarto.yml")]
    for name in active_profiles(project, profile):
        path = project / f"_quarto-{name}.yml"
        if path.exists():
            configs.append(_read_yaml(path))
    found: list[str] = []

    def walk(items):
        for item in items or []:
            if isinstance(item, str):
                found.append(item)
            elif isinstance(item, dict):
                if isinstance(item.get("part"), str) and item["part"].endswith((".qmd", ".md", ".ipynb")):
                    found.append(item["part"])
                walk(item.get("chapters"))

    for config in configs:
        book = config.get("book") or {}
        walk(book.get("chapters"))
        walk(book.get("appendices"))
    return list(dict.fromkeys(found))


def _output_dir(project: Path) -> Path:
    return Path(project) / ((_read_yaml(Path(project) / "_quarto.yml").get("project") or {}).get("output-dir")
                            or "_book")


def _page(project: Path, chapter: str) -> Path:
    return _output_dir(project) / Path(chapter).with_suffix(".html")


def _frozen_file(project: Path, chapter: str) -> Path:
    return Path(project) / "_freeze" / Path(chapter).with_suffix("") / "execute-results" / FREEZE_NAMES["html"]


# ----------------------------------------------------------------------------- what a source edit changed

def source_hash(text: str) -> str:
    """Quarto's freeze hash of a source: MD5 of its text with LF line ends."""
    return hashlib.md5(text.replace("\r\n", "\n").encode("utf-8")).hexdigest()


def _classify(lines: list[str]) -> list[str]:
    """Each line's kind: ``front`` (YAML front matter), ``code`` (a fenced block and its fences), ``struct`` (see
    ``_STRUCTURAL``), ``blank`` or ``prose``."""
    kinds: list[str] = []
    fence: tuple[str, int] | None = None
    front = bool(lines) and lines[0].strip() == "---"
    for i, line in enumerate(lines):
        if front:
            kinds.append("front")
            front = not (i > 0 and line.strip() in ("---", "..."))
            continue
        m = _FENCE.match(line)
        if fence is not None:
            kinds.append("code")
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= fence[1] and not line[m.end():].strip():
                fence = None
            continue
        if m:
            fence = (m.group(1)[0], len(m.group(1)))
            kinds.append("code")
        elif not line.strip():
            kinds.append("blank")
        elif _STRUCTURAL.search(line):
            kinds.append("struct")
        else:
            kinds.append("prose")
    return kinds


def _at_tokens(line: str) -> list[str]:
    return [t.rstrip(".,:;?") for t in _AT.findall(line)]


def signature(text: str) -> tuple:
    """What other pages and the book depend on in a chapter: every line that is not prose (headings, labels,
    divs, code cells, front matter), in order, and every ``@`` cross-reference and citation of its prose, in order.
    Two sources with the same signature differ only in prose."""
    lines = text.splitlines()
    kinds = _classify(lines)
    fixed = tuple((k, line) for k, line in zip(kinds, lines) if k not in ("prose", "blank"))
    refs = tuple(t for k, line in zip(kinds, lines) if k == "prose" for t in _at_tokens(line))
    return fixed, refs


def patch_frozen(old_source: str, new_source: str, frozen_markdown: str) -> str | None:
    """The executed Markdown of ``new_source``, made from that of ``old_source`` when only prose changed; else None.

    Quarto copies a chapter's Markdown outside code cells into its executed result line for line (inline code
    aside, which is never prose here), so a prose edit makes the same line edit in the result. Each changed block
    of lines (with its unchanged prose neighbours, for an insertion at least one) must be found exactly once in the
    frozen Markdown, in the order of the source; anything else returns None and the chapter is executed.
    """
    if signature(old_source) != signature(new_source):
        return None
    old, new = old_source.splitlines(), new_source.splitlines()
    ko, kn = _classify(old), _classify(new)
    frozen = frozen_markdown.split("\n")
    edits: list[tuple[int, int, list[str]]] = []
    last = 0
    opcodes = difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes()
    for tag, i1, i2, j1, j2 in opcodes:
        if tag == "equal":
            continue
        if any(k not in ("prose", "blank") for k in ko[i1:i2] + kn[j1:j2]):
            return None
        before = [old[i1 - 1]] if i1 > 0 and ko[i1 - 1] == "prose" else []
        after = [old[i2]] if i2 < len(old) and ko[i2] == "prose" else []
        needle = before + old[i1:i2] + after
        if not any(line.strip() for line in needle):
            return None
        n = len(needle)
        hits = [p for p in range(last, len(frozen) - n + 1) if frozen[p:p + n] == needle]
        if len(hits) != 1 or any(frozen[p:p + n] == needle for p in range(0, min(last, len(frozen) - n + 1))):
            return None
        start = hits[0] + len(before)
        edits.append((start, i2 - i1, new[j1:j2]))
        last = start + (i2 - i1)
    for start, count, lines in reversed(edits):
        frozen[start:start + count] = lines
    return "\n".join(frozen)


# ----------------------------------------------------------------------------- the stamp and the plan

def _stat(path: Path) -> list[int] | None:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _config_files(project: Path) -> dict[str, str]:
    """MD5 of every configuration-like file of the project folder (``_quarto*.yml``, the title page, the
    bibliography, styles, filters) and of ``_extensions/``."""
    project = Path(project)
    found = {}
    paths = [p for p in project.iterdir() if p.is_file() and p.suffix in CONFIG_SUFFIXES and not p.name.startswith(".")]
    if (project / "_extensions").is_dir():
        paths += [p for p in (project / "_extensions").rglob("*") if p.is_file()]
    for path in sorted(paths):
        found[str(path.relative_to(project))] = hashlib.md5(path.read_bytes()).hexdigest()
    return found


def _hook_state(project: Path) -> dict[str, str | None]:
    """What the pre-render hook last recorded (:mod:`analysis.prerender`): a hash of its stamp, which holds the stat
    of every file of the published generation (figures and tables included: a redraw changes them without
    changing the results), of the package's code and of the chapters' parts and values it wrote; and the
    rendering's provenance (commit, day), which the colophon shows."""
    found: dict[str, str | None] = {"prerender": None, "provenance": None}
    try:
        from .configfile import config_path
        from .prerender import stamp_file
        from .provenance import provenance

        found["prerender"] = hashlib.sha1(stamp_file(config_path(None)).read_bytes()).hexdigest()
        found["provenance"] = json.dumps(provenance(project), sort_keys=True)
    except Exception:  # noqa: BLE001 - unknown: the plan falls back to a full render
        pass
    return found


def _frozen(project: Path, chapter: str) -> dict | None:
    try:
        return json.loads(_frozen_file(project, chapter).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _executable(text: str) -> bool:
    return "{python}" in text


def unsafe_layout(project: Path, chapters: list[str]) -> str | None:
    """Why this command leaves the project to a plain ``quarto render`` (None: it may render it itself): every
    chapter must be a source file inside the project, named by a plain relative path, and the output folder one
    plain folder of the project, so that no frozen result, page or copy it writes can land anywhere else."""
    project = Path(project).resolve()
    out = (_read_yaml(project / "_quarto.yml").get("project") or {}).get("output-dir") or "_book"
    if not isinstance(out, str) or "/" in out or "\\" in out or out in (".", "..") or out.startswith("."):
        return f"output-dir {out!r} is not a plain folder of the project"
    for chapter in chapters:
        path = Path(chapter)
        if (path.is_absolute() or ".." in path.parts or "\\" in chapter or path.suffix not in SOURCE_SUFFIXES
                or path.parts[0].startswith((".", "_"))):
            return f"chapter {chapter!r} is not a source file named by a plain relative path"
        full = project / path
        if full.is_symlink() or not full.is_file() or project not in full.resolve().parents:
            return f"chapter {chapter!r} is not a file of the project"
    return None


@dataclass
class Plan:
    """What :func:`render_book` will do: ``nothing``, ``pages`` (the changed chapters' HTML pages and the print
    formats) or ``full``; ``reason`` says why, ``patches`` the frozen results to rewrite first, ``state`` what the
    sources were when the plan was made (what the stamp will record; None: no stamp afterwards)."""

    kind: str
    reason: str
    chapters: list[str] = field(default_factory=list)
    patches: dict[str, dict] = field(default_factory=dict)
    state: dict | None = None


def _outputs(project: Path) -> dict[str, list[int] | None]:
    """The stat of every file in the output folder: an output written, replaced or removed by anything else
    (a plain ``quarto render``, a hand edit) changes it."""
    out = _output_dir(project)
    found: dict[str, list[int] | None] = {}
    for root, dirs, files in os.walk(out):
        dirs.sort()
        for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(root, d))]):
            path = Path(root) / name
            found[path.relative_to(out).as_posix()] = _stat(path)
    return found


def _complete(project: Path, chapters: list[str], formats: list[str], outputs: dict) -> bool:
    """Every page of the book (and the search index) and one file per print format in the output folder."""
    out = _output_dir(project)
    if "html" in formats and not all(_page(project, c).relative_to(out).as_posix() in outputs for c in chapters):
        return False
    return all(sum(1 for name in outputs if "/" not in name and name.endswith(PRINT_FORMATS[fmt])) == 1
               for fmt in formats if fmt in PRINT_FORMATS)


def source_state(project: Path, profile: str | None) -> dict:
    """What the outputs are rendered from: profiles, date, configuration files, the pre-render hook's state and
    every chapter's source (read once, before the render starts: an edit made during the render is new next time)."""
    project = Path(project)
    chapters = book_chapters(project, profile)
    return {"profiles": active_profiles(project, profile), "date": datetime.date.today().isoformat(),
            "config": _config_files(project), **_hook_state(project),
            "chapters": {c: (project / c).read_text(encoding="utf-8") for c in chapters}}


def plan_render(project: Path, profile: str | None, formats: list[str]) -> Plan:
    """Compare the project with the last render's stamp (see the module docstring)."""
    project = Path(project)
    try:
        state = source_state(project, profile)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return Plan("full", f"the sources could not be read ({type(exc).__name__}: {exc})")
    try:
        stamp = json.loads((project / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Plan("full", "no stamp of an earlier render", state=state)
    try:
        chapters = list(state["chapters"])
        if stamp.get("version") != STAMP_VERSION or stamp.get("profiles") != state["profiles"]:
            return Plan("full", "the last render used another profile", state=state)
        if not set(formats) <= set(stamp.get("formats", [])):
            return Plan("full", "the last render made other formats", state=state)
        if stamp.get("date") != state["date"]:
            return Plan("full", "a new day (the title page shows the date)", state=state)
        if stamp.get("config") != state["config"]:
            return Plan("full", "a configuration file, the title page or the bibliography changed", state=state)
        for key in ("prerender", "provenance"):
            if stamp.get(key) is None or stamp.get(key) != state[key]:
                return Plan("full", "the results, their figures and tables or the package changed", state=state)
        if list(stamp.get("chapters", {})) != chapters:
            return Plan("full", "the chapter list changed", state=state)
        now = _outputs(project)
        if now != stamp.get("outputs") or not _complete(project, chapters, stamp["formats"], now):
            return Plan("full", "an output was written or removed by another command", state=state)
        if "html" in formats and not _xref_index_complete(project, chapters):
            return Plan("full", "Quarto's cross-reference index (.quarto/xref) is incomplete", state=state)
        index = _output_dir(project) / "search.json"
        if "html" in formats and index.exists() and not isinstance(json.loads(index.read_text("utf-8")), list):
            return Plan("full", "the search index is not a list of entries", state=state)
        changed, patches = [], {}
        for chapter in chapters:
            entry = stamp["chapters"][chapter]
            text = state["chapters"][chapter]
            new_hash = source_hash(text)
            executable = _executable(text)
            frozen = _frozen(project, chapter) if executable else None
            if new_hash == entry.get("md5"):
                if executable and (frozen is None or frozen.get("hash") != new_hash):
                    return Plan("full", f"{chapter}: its frozen result is missing or stale", state=state)
                continue
            old = entry.get("source")
            if old is None or source_hash(old) != entry.get("md5") or signature(old) != signature(text):
                return Plan("full", f"{chapter}: more than prose changed (code, a heading, a label, a "
                                    "cross-reference or a citation)", state=state)
            changed.append(chapter)
            if not executable or (frozen is not None and frozen.get("hash") == new_hash):
                continue
            if frozen is None or frozen.get("hash") != entry["md5"]:
                return Plan("full", f"{chapter}: its frozen result is not the last render's", state=state)
            markdown = patch_frozen(old, text, frozen["result"]["markdown"])
            if markdown is None:
                return Plan("full", f"{chapter}: the edited lines could not be placed in its frozen result",
                            state=state)
            patches[chapter] = {**frozen, "hash": new_hash, "result": {**frozen["result"], "markdown": markdown}}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return Plan("full", f"the last render's stamp could not be compared ({type(exc).__name__}: {exc})",
                    state=state)
    if not changed:
        return Plan("nothing", "nothing changed since the last render", state=state)
    if len(changed) * 2 > len(chapters):
        return Plan("full", f"{len(changed)} of {len(chapters)} chapters changed", state=state)
    return Plan("pages", f"prose edits in {', '.join(changed)}", changed, patches, state)


def _xref_index_complete(project: Path, chapters: list[str]) -> bool:
    """Quarto resolves a single page's links to other chapters' figures and sections from ``.quarto/xref``."""
    xref = Path(project) / ".quarto" / "xref"
    try:
        index = json.loads((xref / "INDEX").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    for chapter in chapters:
        entry = index.get(chapter)
        if not isinstance(entry, dict) or not entry or not all(
                isinstance(f, str) and "/" not in f and (xref / f).is_file() for f in entry.values()):
            return False
    return True


def write_stamp(project: Path, formats: list[str], state: dict) -> None:
    """Record what the outputs were rendered from (``state``, read when the render was planned) and the outputs
    as they are now; a chapter whose frozen result is not its source's gets no source, so that the next render
    renders the whole book."""
    project = Path(project)
    entries = {}
    for chapter, text in state["chapters"].items():
        md5 = source_hash(text)
        if _executable(text) and (_frozen(project, chapter) or {}).get("hash") != md5:
            entries[chapter] = {"md5": None, "source": None}
        else:
            entries[chapter] = {"md5": md5, "source": text}
    stamp = {"version": STAMP_VERSION, "formats": formats, **{k: v for k, v in state.items() if k != "chapters"},
             "outputs": _outputs(project), "chapters": entries}
    write_file(project / STAMP, json.dumps(stamp, indent=1) + "\n")


def remove_stamp(project: Path) -> None:
    (Path(project) / STAMP).unlink(missing_ok=True)


# ----------------------------------------------------------------------------- the search index of edited pages

def _page_of(doc) -> str | None:
    href = doc.get("href") if isinstance(doc, dict) else None
    return href.partition("#")[0] if isinstance(href, str) else None


def _write_json(path: Path, data) -> None:
    write_file(path, json.dumps(data, indent=2, ensure_ascii=False))


def detach_search_entries(out: Path, pages: set[str]) -> list | None:
    """Take the entries of ``pages`` (hrefs relative to the output folder) out of ``search.json`` before they are
    rendered again, and return the index as it was (None: the book has no index).

    Quarto's render of single pages updates ``search.json`` with the same code as a whole render (the page's own
    entry and one per section, from the rendered HTML) but in place: an entry it no longer writes (a section whose
    prose was all deleted) would stay. Without the old entries, the index holds exactly what Quarto writes for the
    pages now; :func:`reattach_search_entries` puts them back in the book's order.
    """
    path = Path(out) / "search.json"
    if not path.exists():
        return None
    docs = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(docs, list):
        raise ValueError(f"{path}: not a list of entries")
    _write_json(path, [d for d in docs if _page_of(d) not in pages])
    return docs


def reattach_search_entries(out: Path, pages: set[str], before: list) -> str | None:
    """Move the entries Quarto wrote for ``pages`` (at the end of the index) to where the pages' old entries were,
    which is where a whole render writes them. Returns None, or why the index cannot be trusted (an entry of another
    page changed, or a page that had entries has none): the caller then renders the whole HTML book."""
    path = Path(out) / "search.json"
    try:
        docs = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"search.json unreadable ({type(exc).__name__})"
    if not isinstance(docs, list):
        return "search.json is not a list of entries"
    changed = [d for d in docs if _page_of(d) not in pages] != [d for d in before if _page_of(d) not in pages]
    if changed:
        return "the entries of other pages changed"
    new = {page: [d for d in docs if _page_of(d) == page] for page in pages}
    lost = sorted({_page_of(d) for d in before if _page_of(d) in pages and not new[_page_of(d)]})
    if lost:
        return f"Quarto wrote no entry for {', '.join(lost)}"
    merged, placed = [], set()
    for doc in before:
        page = _page_of(doc)
        if page not in pages:
            merged.append(doc)
        elif page not in placed:
            merged += new[page]
            placed.add(page)
    merged += [d for page in sorted(pages - placed) for d in new[page]]
    if merged != docs:
        _write_json(path, merged)
    return None


# ----------------------------------------------------------------------------- the print formats in a copy

def print_copy(project: Path, fmts: list[str], dest: Path) -> Path:
    """A copy of the project that renders only the formats ``fmts`` (``typst``, ``docx``) from the frozen results.

    Sources (``.qmd``, ``.md``), configuration files and ``_freeze/`` are copied (Quarto resolves links to find a
    file's project); every other entry (the package, figures, tables, derivatives, results, caches) is linked. The
    ``_quarto.yml`` keeps only ``fmts`` among the formats and drops the pre-render hook and the site resources.
    """
    project, dest = Path(project), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    output_dir = _output_dir(project).name
    for entry in project.iterdir():
        name = entry.name
        if name in (".quarto", ".git", output_dir, STAMP, "_freeze") or name.startswith(f"{STAMP}."):
            continue
        target = dest / name
        if name == "_quarto.yml":
            import yaml

            config = _read_yaml(entry)
            for key in ("pre-render", "post-render", "resources"):
                (config.get("project") or {}).pop(key, None)
            formats = config.get("format") or {}
            config["format"] = {fmt: formats.get(fmt) or {} for fmt in fmts}
            target.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
        elif entry.is_file() and entry.suffix in CONFIG_SUFFIXES:
            shutil.copy2(entry, target)
        else:
            _mirror(entry, target)
    freeze = project / "_freeze"
    if freeze.is_dir():
        shutil.copytree(freeze, dest / "_freeze", symlinks=False, ignore_dangling_symlinks=True)
    return dest


def _mirror(src: Path, dest: Path) -> None:
    """``dest`` as ``src``: sources copied, folders holding sources mirrored, everything else linked
    (``<chapter>_files`` folders, Quarto's own scratch, are left out)."""
    if src.is_file() and src.suffix in SOURCE_SUFFIXES:
        shutil.copy2(src, dest)
    elif src.is_dir() and not src.is_symlink() and any(p.suffix in SOURCE_SUFFIXES for p in src.rglob("*")):
        dest.mkdir()
        for sub in src.iterdir():
            if not (sub.is_dir() and sub.name.endswith("_files")):
                _mirror(sub, dest / sub.name)
    else:
        dest.symlink_to(src.resolve())


class _FreezeWatch:
    """Whether every chapter with code has a frozen result for its source, re-reading only results that changed."""

    def __init__(self, project: Path, chapters: list[str]):
        self.project = Path(project)
        self.todo = {}
        for chapter in chapters:
            text = (self.project / chapter).read_text(encoding="utf-8")
            if _executable(text):
                self.todo[chapter] = source_hash(text)
        self.seen: dict[str, list[int] | None] = {}

    def complete(self) -> bool:
        for chapter, md5 in list(self.todo.items()):
            path = _frozen_file(self.project, chapter)
            stat = _stat(path)
            if stat is None or self.seen.get(chapter) == stat:
                return False
            self.seen[chapter] = stat
            if (_frozen(self.project, chapter) or {}).get("hash") != md5:
                return False
            del self.todo[chapter]
        return True


def _frozen_for_every_chapter(project: Path, chapters: list[str]) -> str | None:
    """None when every chapter with code has a frozen result for its current source; else the first that has not."""
    for chapter in chapters:
        text = (Path(project) / chapter).read_text(encoding="utf-8")
        if _executable(text) and (_frozen(project, chapter) or {}).get("hash") != source_hash(text):
            return chapter
    return None


# ----------------------------------------------------------------------------- running Quarto

@dataclass
class _Job:
    name: str
    proc: subprocess.Popen | None
    log: Path
    workdir: Path | None = None
    formats: tuple[str, ...] = ()

    def wait(self) -> tuple[int, str]:
        code = self.proc.wait()
        return code, self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""


def _start(name: str, cmd: list[str], cwd: Path, env: dict, log: Path, workdir: Path | None = None,
           formats: tuple[str, ...] = ()) -> _Job:
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    return _Job(name, proc, log, workdir, formats)


def _say(message: str) -> None:
    print(f"[fmri-report render] {message}", flush=True)


def _tail(log: str, n: int = 40) -> str:
    return "\n".join(log.rstrip().splitlines()[-n:])


def render_book(quarto: str, project: Path, extra: list[str], env: dict | None = None) -> int:
    """``fmri-report render [--to html|all] [--profile P]``: see the module docstring. Returns Quarto's status."""
    project = Path(project).resolve()
    env = dict(os.environ if env is None else env)
    parsed = _parse(extra)
    why = "not this package's book" if not is_book_project(project) else "other arguments" if parsed is None else None
    if why is None:
        try:
            hook = profile_hook(project, parsed[0])
            why = (f"the profile's own pre-render step ({hook})" if hook is not None
                   else unsafe_layout(project, book_chapters(project, parsed[0])))
        except (OSError, ValueError) as exc:
            why = f"{type(exc).__name__}: {exc}"
    if why is not None:
        if is_book_project(project):
            _say(f"a plain quarto render ({why})")
        remove_stamp(project)
        return subprocess.run([quarto, "render", *extra], cwd=project, env=env).returncode
    profile, to = parsed
    book_formats = list((_read_yaml(project / "_quarto.yml").get("format") or {}))
    formats = ["html"] if to == "html" else book_formats
    profile_args = ["--profile", profile] if profile else []
    plan = plan_render(project, profile, formats)
    _say(f"{plan.kind}: {plan.reason}")
    if plan.kind == "nothing":
        return 0
    remove_stamp(project)  # written again only when every output of this render is complete
    chapters = book_chapters(project, profile)
    prints = [f for f in formats if f in PRINT_FORMATS]
    html = [quarto, "render", *(plan.chapters if plan.kind == "pages" else []), *profile_args]
    html += ["--to", "html"] + (["--use-freezer"] if plan.kind == "pages" else [])
    out = _output_dir(project)
    pages = {_page(project, c).relative_to(out).as_posix() for c in plan.chapters}
    index = None
    with tempfile.TemporaryDirectory(prefix="fmri-report-render-", dir=_scratch(project)) as tmp:
        tmp = Path(tmp)
        if plan.kind == "pages":
            for chapter, frozen in plan.patches.items():
                path = _frozen_file(project, chapter)
                part = path.with_name(f".{path.name}.{os.getpid()}")
                part.write_text(json.dumps(frozen, indent=2), encoding="utf-8")
                os.replace(part, path)
                _say(f"{chapter}: prose edit applied to its frozen result (no kernel)")
            copies = _print_copies(project, _groups(prints), chapters, tmp)  # before the HTML render's hook starts
            index = detach_search_entries(out, pages)
            jobs = [_start("html", html, project, env, tmp / "html.log")]
            jobs += _start_prints(quarto, env, copies, profile_args, tmp)
        else:
            # the whole book: the HTML in place; the print books start as soon as every chapter is frozen
            # (the HTML render then still has its last pages, the bibliography and the search index to do)
            proc = subprocess.Popen(html, cwd=project, env=env)
            jobs, waiting, frozen = [], bool(prints), _FreezeWatch(project, chapters)
            while proc.poll() is None:
                if waiting and frozen.complete():
                    try:
                        copies = _print_copies(project, _groups(prints), chapters, tmp)
                    except (OSError, shutil.Error):  # a file Quarto was writing: copied after the HTML render
                        waiting = None
                    else:
                        jobs, waiting = _start_prints(quarto, env, copies, profile_args, tmp), False
                time.sleep(0.3)
            if proc.returncode != 0:
                for job in jobs:
                    job.proc.kill() if job.proc is not None else None
                    job.proc.wait() if job.proc is not None else None
                return proc.returncode
            if waiting is not False and prints:
                jobs = _start_prints(quarto, env, _print_copies(project, _groups(prints), chapters, tmp),
                                     profile_args, tmp)
        code = _finish(quarto, project, env, jobs, profile_args)
    why = reattach_search_entries(out, pages, index) if code == 0 and index is not None else None
    if why is not None:
        _say(f"the search index of the rendered pages cannot be trusted ({why}): rendering the HTML book")
        code = subprocess.run([quarto, "render", *profile_args, "--to", "html", "--no-clean", "--use-freezer"],
                              cwd=project, env=env).returncode
    if code == 0 and plan.state is not None:
        # the pre-render hook ran inside this render: a whole render is rendered from what it left (its stamp
        # may be new: the run before it had just written the results, too recently to be stamped); a render of
        # some pages only from what the plan saw, so a hook state that changed meanwhile leaves no stamp
        hook = _hook_state(project)
        if plan.kind == "full":
            if hook["prerender"] is None:
                # the hook does not stamp files written moments before it (analysis.prerender.record_prerender:
                # the results of a run just before the render); run it once more now that they are older, so
                # that the next render can tell a prose edit from a change of the results
                _rerun_hook(project, env, profile)
                hook = _hook_state(project)
            write_stamp(project, formats, {**plan.state, **hook})
        elif all(plan.state.get(k) == v for k, v in hook.items()):
            write_stamp(project, formats, plan.state)
    return code


def _rerun_hook(project: Path, env: dict, profile: str | None) -> None:
    """This package's pre-render hook as Quarto runs it (in the project, ``$QUARTO_PROFILE`` set); its output is
    dropped and a failure leaves only the stamp out (the next render is then a whole one)."""
    env = {**env, **({"QUARTO_PROFILE": profile} if profile else {})}
    subprocess.run([sys.executable, *HOOK.split()[1:]], cwd=project, env=env, capture_output=True, check=False)


def _scratch(project: Path) -> Path:
    scratch = project / ".quarto" / "fmri-report"
    scratch.mkdir(parents=True, exist_ok=True)
    return scratch


def _parse(extra: list[str]) -> tuple[str | None, str | None] | None:
    """(profile, to) from ``--profile P`` and ``--to html|all``; None for anything else (a plain render)."""
    profile = to = None
    args = list(extra)
    while args:
        arg = args.pop(0)
        name, eq, value = arg.partition("=")
        if name in ("--profile", "--to", "-t") and not eq:
            if not args:
                return None
            value = args.pop(0)
        if name == "--profile" and profile is None:
            profile = value
        elif name in ("--to", "-t") and to is None and value in ("html", "all"):
            to = value
        else:
            return None
    return profile, to


def _groups(prints: list[str]) -> list[list[str]]:
    """One copy per print format, in parallel, when there is a core for each of them beside the HTML render and
    the machine is not busy already (1-minute load average below the number of cores); otherwise one copy for all
    of them, which saves a Quarto start-up of CPU time and leaves the cores to the two renders. On 2 cores a
    prose edit renders in 8.6 s with one copy against 11.1 s with two (three Quarto processes then share the two
    cores), measured side by side."""
    cores = os.cpu_count() or 1
    if cores < 1 + len(prints) or os.getloadavg()[0] >= cores:
        return [prints]
    return [[f] for f in prints]


def _print_copies(project: Path, groups: list[list[str]], chapters: list[str],
                  tmp: Path) -> dict[tuple[str, ...], Path | None]:
    """A copy of the project per group of print formats (None: render them in place after the others), when every
    chapter is frozen and the machine has more than one core."""
    groups = [tuple(g) for g in groups if g]
    missing = _frozen_for_every_chapter(project, chapters)
    if missing is not None and groups:
        _say(f"{missing} has no frozen result for its source: the PDF and Word books are rendered in place")
    parallel = missing is None and (os.cpu_count() or 1) >= 2
    if parallel and groups:  # what the copies are made from (see _finish)
        (tmp / "frozen-at-copy.json").write_text(json.dumps(_frozen_stats(project, chapters)), encoding="utf-8")
    try:
        copies = {g: print_copy(project, list(g), tmp / "+".join(g)) if parallel else None for g in groups}
    except BaseException:
        for g in groups:  # (our scratch copies: rmtree unlinks their links, never follows them)
            shutil.rmtree(tmp / "+".join(g), ignore_errors=True)
        (tmp / "frozen-at-copy.json").unlink(missing_ok=True)
        raise
    return copies


def _frozen_stats(project: Path, chapters: list[str]) -> dict[str, str | None]:
    """SHA-1 of each chapter's frozen result (content, not stat: a thaw through the PDF's and Word's links resets
    the result's mtime)."""
    found = {}
    for chapter in chapters:
        try:
            found[chapter] = hashlib.sha1(_frozen_file(project, chapter).read_bytes()).hexdigest()
        except OSError:
            found[chapter] = None
    return found


def _start_prints(quarto: str, env: dict, copies: dict[tuple[str, ...], Path | None], profile_args: list[str],
                  tmp: Path) -> list[_Job]:
    return [_start("+".join(g), [quarto, "render", *profile_args], workdir, env, tmp / f"{'+'.join(g)}.log",
                   workdir, g) if workdir else _Job("+".join(g), None, tmp / f"{'+'.join(g)}.log", None, g)
            for g, workdir in copies.items()]


def _finish(quarto, project, env, jobs, profile_args) -> int:
    """Wait for every job; move the copies' outputs into ``_book/``; a print format whose copy failed (or executed
    anything) is rendered again in place."""
    out = _output_dir(project)
    again: list[str] = []
    status = 0
    for job in jobs:
        if job.proc is None:
            again += job.formats
            continue
        code, log = job.wait()
        if job.name == "html":
            sys.stdout.write(log)
            if code != 0:
                status = code
            continue
        books = {fmt: sorted((job.workdir / out.name).glob(f"*{PRINT_FORMATS[fmt]}")) for fmt in job.formats}
        counts = [len(found) for found in books.values()]
        if code != 0 or KERNEL_STARTED in log or counts != [1] * len(counts):
            why = (f"exit status {code}" if code != 0 else "it executed a chapter" if KERNEL_STARTED in log
                   else f"{counts} output files")
            _say(f"the {job.name} copy was not used ({why}); rendering {job.name} in place\n{_tail(log)}")
            again += job.formats
            continue
        out.mkdir(exist_ok=True)
        for (book,) in books.values():
            shutil.move(str(book), out / book.name)
            _say(f"Output created: {(out / book.name).relative_to(project)}")
    if status != 0:
        return status
    copied = jobs[0].log.parent / "frozen-at-copy.json" if jobs else None
    if copied is not None and copied.exists():
        chapters = list(json.loads(copied.read_text(encoding="utf-8")))
        if json.loads(copied.read_text(encoding="utf-8")) != _frozen_stats(project, chapters):
            _say("a frozen result changed while the print books were rendered from a copy: rendering them in place")
            again = [f for f in PRINT_FORMATS if any(f in job.formats for job in jobs)]
    for fmt in again:
        code = subprocess.run([quarto, "render", *profile_args, "--to", fmt, "--no-clean", "--use-freezer"],
                              cwd=project, env=env).returncode
        if code != 0:
            return code
    return 0
