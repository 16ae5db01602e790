"""The pre-render hook's fast path: skip the Python stack when nothing the last pre-render read has changed.

Quarto runs ``python -m analysis --prerender`` before every render. Its full path loads (or computes) the results
and writes the title page and the chapters' parts and values (:mod:`analysis.pages`): about 1 s with valid cached
results, most of it importing numpy, pandas and nilearn. After a prose edit nothing it reads has changed, so
:func:`prerender_is_current` compares what :func:`record_prerender` saved and the hook exits in 0.2 s
(``tests/test_prerender.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from .files import write_file

__all__ = ["prerender_is_current", "record_prerender", "stamp_file", "PRERENDER_STAMP"]

PACKAGE_DIR = Path(__file__).parent

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


def stamp_file(config_file: Path | None) -> Path:
    """Where the stamp lives: the cache folder named by the config's ``[output]`` table (read without validating
    the rest, so nothing heavy is imported; a config it cannot read sends the hook down the full path)."""
    from .configfile import DEFAULT_CACHE_DIR, DEFAULT_OUTPUT_DIR, read_toml

    table = read_toml(config_file).get("output", {}) if config_file else {}
    out = Path(table.get("dir", DEFAULT_OUTPUT_DIR))
    cache = Path(table.get("cache_dir", DEFAULT_CACHE_DIR))
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
    title page and of the chapters' parts and values. :func:`record_prerender` saved all of them; if every one
    is the same, the results are still valid, the title page and ``_parts/`` are in step, and the hook can
    skip the Python stack (numpy, pandas, nilearn: most of its time) and the hashing.
    """
    try:
        stamp = stamp_file(config_file)
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
    chapters' parts and values). Nothing is saved when a watched file changed in the last two seconds (it could change
    again without changing its stamp); the next pre-render then takes the full path. Returns True when saved.
    """
    files = [str(p) for p in [*_package_paths(), *watched, *written]]
    state = _state(args, config_file, files)
    ours = {str(p) for p in written}
    now = time.time_ns()
    stamp = stamp_file(config_file)
    if any(s is not None and now - max(s[3], s[4]) < _RACY_NS for p, s in state["files"].items() if p not in ours):
        stamp.unlink(missing_ok=True)
        return False
    write_file(stamp, json.dumps({**state, "summary": summary}, indent=0) + "\n")
    return True
