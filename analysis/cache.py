"""The results cache: keys, input checksums and whether the results on disk are still valid.

The key of a generation of results is a SHA-256 over the canonical configuration, the package version, a
fingerprint of the code that computes (:func:`code_fingerprint`) and the checksums of the input files. The
figures have their own fingerprint (:func:`figures_fingerprint`): a plot edit redraws the figures from the saved
results (:func:`analysis.pipeline.redraw`) and never invalidates the computation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

from . import __version__, data, outputs
from .config import Config
from .results import Results

__all__ = ["cache_dir", "compute_cache_key", "code_fingerprint", "figures_fingerprint", "input_checksums",
           "valid_cached", "RENDER_ONLY", "FIGURE_CODE", "RESULTS_FILE"]

log = logging.getLogger("analysis")

RESULTS_FILE = Path("results") / "results.json"
PACKAGE_DIR = Path(__file__).parent

def cache_dir(config: Config) -> Path:
    """The resolved cache folder (``output.cache_dir``, relative to ``output.dir``)."""
    cache = Path(config.output.cache_dir)
    return (cache if cache.is_absolute() else Path(config.output.dir) / cache).resolve()



# Modules read only when the report is rendered (prose, tables, title page): editing them never changes a result,
# so they are left out of the cache key; every other module computes (or draws the figures the run writes).
RENDER_ONLY = ("__main__.py", "checklist.py", "metadata.py", "pages.py", "prerender.py", "provenance.py", "render.py",
               "report.py", "tables.py", "text.py")
# The figure code: it draws from the saved results, so it has its own fingerprint (a plot edit redraws, never refits).
FIGURE_CODE = "figures/"


def code_fingerprint(package_dir: Path | None = None) -> str:
    """SHA-256 over the source of every module that computes results.

    Part of the cache key, so results are never served after an edit of the code that made them (the
    templates and the render-only modules in :data:`RENDER_ONLY` are read at render time, and the figure code
    has its own :func:`figures_fingerprint`).
    """
    package_dir = package_dir or PACKAGE_DIR
    h = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir).as_posix()
        if rel in RENDER_ONLY or rel.startswith(FIGURE_CODE) or "__pycache__" in rel:
            continue
        h.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def compute_cache_key(config: Config, checksums: dict[str, str], code: str | None = None) -> str:
    """SHA-256 over the canonical config, the package version, the computing code and the input checksums."""
    h = hashlib.sha256()
    h.update(config.canonical_json().encode())
    h.update(__version__.encode())
    h.update((code or code_fingerprint()).encode())
    for name in sorted(checksums):
        h.update(f"{name}={checksums[name]}".encode())
    return h.hexdigest()


def figures_fingerprint(package_dir: Path | None = None) -> str:
    """SHA-256 over the figure code (``analysis/figures/``) and the versions of the libraries that draw.

    Stored in the results; when it changes, the figures are redrawn from the saved results, nothing is refitted.
    """
    import importlib.metadata as md

    package_dir = package_dir or PACKAGE_DIR
    h = hashlib.sha256()
    for path in sorted((package_dir / FIGURE_CODE).rglob("*.py")):
        if "__pycache__" not in path.parts:
            h.update(path.relative_to(package_dir).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    for pkg in ("matplotlib", "nilearn"):
        try:
            h.update(f"{pkg}={md.version(pkg)}".encode())
        except md.PackageNotFoundError:
            pass
    return h.hexdigest()


def valid_cached(config: Config, out: Path) -> Results | None:
    """The results in ``out`` if they are a complete generation computed from this config, code and inputs."""
    path = out / RESULTS_FILE
    if not path.exists():
        return None
    try:
        text = path.read_bytes()
        stored = json.loads(text)
        files = stored["dataset"]["files"]
        if stored["dataset"]["fallback_reason"] and _spm_auditory_present(config):
            return None  # the real data has appeared since the fallback
        if not all(Path(entry["path"]).exists() for entry in files.values()):
            return None
        checksums = input_checksums({n: e["path"] for n, e in files.items()}, cache_dir(config))
        if stored["cache_key"] != compute_cache_key(config, checksums):
            return None
        results = Results.from_text(text, output_dir=out)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        log.warning("%s: cached results unreadable (%s); recomputing", path, exc)
        return None
    missing = [p for p in _recorded_paths(results) if not (out / p).exists()]
    if missing or not outputs.verify(out):  # every file of the generation present with its recorded hash
        return None
    return results


_STAMPS_FILE = "input-checksums.json"
_RACY_S = 2.0  # a file changed this recently is hashed again next time (an edit within the same tick)


def input_checksums(paths: dict[str, str], cache: Path, known: dict[str, str] | None = None) -> dict[str, str]:
    """SHA-256 per input file, re-hashed only when its (dev, inode, size, mtime, ctime) stamp changed.

    Any write changes ctime, which no tool can set back, so an unchanged stamp means unchanged content
    (the scheme git's index uses). ``known`` holds hashes already computed in this run (resolved path -> hex).
    """
    store = cache / _STAMPS_FILE
    try:
        stamps = json.loads(store.read_text(encoding="utf-8"))
        if not isinstance(stamps, dict):
            stamps = {}
    except (OSError, ValueError):
        stamps = {}
    known = known or {}
    out, changed, now = {}, False, time.time()
    for name, p in paths.items():
        p = str(Path(p).resolve())
        st = os.stat(p)
        stamp = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        entry = stamps.get(p)
        if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
            out[name] = entry["sha256"]
            continue
        known_hash = known.get(p)
        out[name] = known_hash if isinstance(known_hash, str) else data.file_sha256(p)
        if now - max(st.st_mtime_ns, st.st_ctime_ns) / 1e9 > _RACY_S:
            stamps[p] = {"stamp": stamp, "sha256": out[name]}
            changed = True
    if changed:
        try:
            cache.mkdir(parents=True, exist_ok=True)
            tmp = cache / f".{_STAMPS_FILE}.{os.getpid()}"
            tmp.write_text(json.dumps(stamps, indent=0, sort_keys=True), encoding="utf-8")
            os.replace(tmp, store)
        except OSError:
            pass
    return out


def _spm_auditory_present(config: Config) -> bool:
    if config.data.dataset != "spm_auditory":
        return False
    base = Path(data.nilearn_data_dir(config) or Path.home() / "nilearn_data")
    return (base / "spm_auditory" / "MoAEpilot" / "sub-01").exists()


def _recorded_paths(results: Results) -> list[str]:
    paths = list(results.figures.values()) + list(results.files.values())
    for c in results.contrasts.values():
        paths += list(c.files.values())
    return paths
