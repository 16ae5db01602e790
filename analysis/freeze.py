"""Keep Quarto's ``freeze: auto`` safe for a report whose numbers live outside the .qmd files.

Quarto re-executes a chapter under ``freeze: auto`` only when that chapter's own source changes. Our chapters
read results computed by the package, so a frozen chapter would go stale when the data, the configuration or
the package's code (templates included) change. The pre-render hook therefore fingerprints all three and
empties ``_freeze/`` when the fingerprint changes: an edit to one chapter's prose re-executes that chapter
only, anything else re-executes them all.

Quarto also freezes each chapter once per output format (``_freeze/<chapter>/execute-results/html.json``,
``typ.json``, ``docx.json``), so a cold ``quarto render`` of three formats would execute every chapter three
times. The chapters' cells only print Markdown (text, pipe tables, image links to ``figures/``, raw HTML blocks
that other formats drop), so one execution is valid for every format: :func:`share_frozen_results` makes the
PDF's and Word's frozen results links to the HTML's. The first format rendered executes a chapter and writes its
result through the links; the others thaw it (same source hash). ``tests/test_render.py`` checks that a real
render starts one kernel per chapter and that no frozen result is format-specific.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

__all__ = ["fingerprint", "sync_freeze", "share_frozen_results", "SHARED_FORMATS", "prerender_is_current",
           "record_prerender"]

SHARED_FORMATS = ("typ", "docx")
"""Frozen-result names (Quarto names them after the output file's extension) that link to ``html.json``."""

PACKAGE_DIR = Path(__file__).parent
FINGERPRINT_FILE = "freeze-fingerprint.txt"


def fingerprint(cache_key: str, package_dir: Path = PACKAGE_DIR) -> str:
    """SHA-256 over the results' cache key and every source and template file of the package."""
    h = hashlib.sha256(cache_key.encode())
    for path in sorted(p for p in package_dir.rglob("*") if p.suffix in (".py", ".j2") and p.is_file()):
        h.update(str(path.relative_to(package_dir)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def sync_freeze(cache_key: str, project_dir: Path, cache_dir: Path, package_dir: Path = PACKAGE_DIR) -> bool:
    """Empty ``<project>/_freeze`` when the fingerprint differs from the last render's.

    Returns
    -------
    bool
        True when the frozen chapters were discarded (or there were none to keep).
    """
    new = fingerprint(cache_key, package_dir)
    stamp = Path(cache_dir) / FINGERPRINT_FILE
    old = stamp.read_text(encoding="utf-8").strip() if stamp.exists() else ""
    frozen = Path(project_dir) / "_freeze"
    stale = new != old
    if stale and frozen.exists():
        shutil.rmtree(frozen)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    tmp = stamp.with_suffix(".tmp")
    tmp.write_text(new + "\n", encoding="utf-8")
    tmp.replace(stamp)
    share_frozen_results(Path(project_dir))
    return stale


def executable_chapters(project_dir: Path) -> list[Path]:
    """The project's ``.qmd`` files that hold Python code (cells or inline expressions), relative paths."""
    project_dir = Path(project_dir)
    found = []
    for path in sorted([*project_dir.glob("*.qmd"), *project_dir.glob("chapters/*.qmd")]):
        if "{python}" in path.read_text(encoding="utf-8"):
            found.append(path.relative_to(project_dir))
    return found


def share_frozen_results(project_dir: Path, formats: tuple[str, ...] = SHARED_FORMATS,
                         chapters: list[Path] | None = None) -> list[Path]:
    """Link each chapter's ``<format>.json`` frozen result to its ``html.json``.

    ``chapters``: the chapters to link (relative paths; default :func:`executable_chapters`, the single-run
    books'; the study book passes its own, :func:`analysis.study_report.study_chapters`).

    The links are absolute: Quarto copies a chapter's frozen results next to the chapter before it thaws them
    (``chapters/<name>_files/execute-results/``), link included, and an absolute link still names the frozen
    file from there (a relative one would name a copy that may not exist yet). They are re-made at every
    pre-render, so a moved project gets links to its own ``_freeze/``. A real file in the way (a result frozen
    before the links existed) is replaced by the link; nothing else in ``_freeze/`` is touched.

    Returns
    -------
    list of Path
        The links made or checked.
    """
    made = []
    for chapter in (executable_chapters(project_dir) if chapters is None else chapters):
        results = Path(project_dir).resolve() / "_freeze" / chapter.with_suffix("") / "execute-results"
        results.mkdir(parents=True, exist_ok=True)
        target = str(results / "html.json")
        for fmt in formats:
            link = results / f"{fmt}.json"
            if link.is_symlink() and os.readlink(link) == target:
                made.append(link)
                continue
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(target)
            made.append(link)
    return made


# ----------------------------------------------------------------------------- the pre-render hook's fast path

PRERENDER_STAMP = "prerender-stamp.json"
_STAMP_ENV = ("ANALYSIS_CONFIG", "NILEARN_DATA", "HOME")
_RACY_NS = 2_000_000_000  # a file changed this recently may change again within the same time stamp


def _file_stamp(path: str | Path) -> list[int] | None:
    """(device, inode, size, mtime, ctime, mode) of a file or folder; None when it does not exist.

    Any write changes ctime, which no tool can set back, so an unchanged stamp means unchanged content (the
    scheme git's index and :func:`analysis.cache.input_checksums` use).
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode]


def _stamp_file(config_file: Path | None) -> Path:
    """Where the stamp lives: the cache folder named by the config's ``[output]`` table (read without validating
    the rest, so nothing heavy is imported; a config it cannot read sends the hook down the full path)."""
    from .config import OutputConfig, read_toml

    table = read_toml(config_file).get("output", {}) if config_file else {}
    defaults = OutputConfig()
    out = Path(table.get("dir", defaults.dir))
    cache = Path(table.get("cache_dir", defaults.cache_dir))
    return (cache if cache.is_absolute() else out / cache).resolve() / PRERENDER_STAMP


def _package_paths(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Every source file and template of the package, and its folders (a file added or removed changes them)."""
    paths = [package_dir]
    for path in sorted(package_dir.rglob("*")):
        if "__pycache__" in path.parts:
            continue
        if path.is_dir() or path.suffix in (".py", ".j2"):
            paths.append(path)
    return paths


def _state(args: list, config_file: Path | None, watched: list[str]) -> dict:
    config = hashlib.sha256(config_file.read_bytes()).hexdigest() if config_file else None
    return {"args": [None if a is None else str(a) for a in args], "cwd": str(Path.cwd().resolve()),
            "env": {k: os.environ.get(k) for k in _STAMP_ENV}, "config": config,
            "files": {p: _file_stamp(p) for p in watched}}


def prerender_is_current(args: list, config_file: Path | None) -> str | None:
    """The last pre-render's summary line when nothing it depends on has changed since; else None.

    The pre-render hook (``python -m analysis --prerender``) runs before every ``quarto render``. After a prose
    edit nothing it reads has changed: the command line, the working folder, ``$ANALYSIS_CONFIG``,
    ``$NILEARN_DATA``, the config file's bytes, and the stamps of the input files, of every file of the published
    generation (manifest, results, figures, tables, derivatives), of the package's code and templates, of the
    title-page file and of the freeze fingerprint. :func:`record_prerender` saved all of them; if every one
    is the same, the results are still valid, the title page and ``_freeze/`` are in step, and the hook can
    skip the Python stack (numpy, pandas, nilearn: most of its time) and the hashing.
    """
    try:
        stamp = _stamp_file(config_file)
        stored = json.loads(stamp.read_text(encoding="utf-8"))
        summary = stored.pop("summary")
        if stored == _state(args, config_file, list(stored["files"])):
            return summary
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def record_prerender(args: list, config_file: Path | None, watched: list[Path], written: list[Path],
                     summary: str) -> bool:
    """Save what a complete pre-render depended on (see :func:`prerender_is_current`).

    ``watched``: inputs and outputs it read; ``written``: files it wrote itself just now (the title page, the
    freeze fingerprint). Nothing is saved when a watched file changed in the last two seconds (it could change
    again without changing its stamp); the next pre-render then takes the full path. Returns True when saved.
    """
    files = [str(p) for p in [*_package_paths(), *watched, *written]]
    state = _state(args, config_file, files)
    ours = {str(p) for p in written}
    now = time.time_ns()
    stamp = _stamp_file(config_file)
    if any(s is not None and now - max(s[3], s[4]) < _RACY_NS for p, s in state["files"].items() if p not in ours):
        stamp.unlink(missing_ok=True)
        return False
    stamp.parent.mkdir(parents=True, exist_ok=True)
    tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}")
    tmp.write_text(json.dumps({**state, "summary": summary}, indent=0) + "\n", encoding="utf-8")
    os.replace(tmp, stamp)
    return True
