"""Keep Quarto's ``freeze: auto`` safe for a report whose numbers live outside the .qmd files.

Quarto re-executes a chapter under ``freeze: auto`` only when that chapter's own source changes. Our chapters
read results computed by the package, so a frozen chapter would go stale when the data, the configuration or
the package's code (templates included) change. The pre-render hook therefore fingerprints all three and
empties ``_freeze/`` when the fingerprint changes: an edit to one chapter's prose re-executes that chapter
only, anything else re-executes them all.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

__all__ = ["fingerprint", "sync_freeze"]

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
    return stale
