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
import os
import shutil
from pathlib import Path

__all__ = ["fingerprint", "sync_freeze", "share_frozen_results", "SHARED_FORMATS"]

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


def share_frozen_results(project_dir: Path, formats: tuple[str, ...] = SHARED_FORMATS) -> list[Path]:
    """Link each chapter's ``<format>.json`` frozen result to its ``html.json``.

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
    for chapter in executable_chapters(project_dir):
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
