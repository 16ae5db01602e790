"""The output folder: what the project owns in it, and how a new generation of outputs is published.

The project writes four folders under ``output.dir``: ``figures/``, ``tables/``, ``derivatives/`` and
``results/``. It owns them only as far as its manifest says: ``results/manifest.json`` lists every file
it wrote there with its SHA-256. A folder holding a file that is not in the manifest (a thesis chapter, a
figure edited by hand) is never replaced or deleted: the run stops with a one-line error before any
computation.

Publishing is all-or-nothing as seen by any later reader. A generation is computed in a staging folder
inside ``output.dir`` (so every move is a rename on one filesystem), then:

1. ``results/`` is moved aside first: from this instant no valid results exist, so nothing can be served;
2. ``figures/``, ``tables/``, ``derivatives/`` are swapped in;
3. the new ``results/`` (with its manifest) is renamed into place last.

A reader (:func:`verify`) accepts outputs only when every manifest entry exists with its recorded hash, so
a crash at any instant leaves either the complete old generation, the complete new one, or a state that
is recomputed, never a mix that is served.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

__all__ = ["OUTPUT_FOLDERS", "MANIFEST", "GITIGNORE", "OutputError", "check_output_dir", "check_cache_dir",
           "check_owned", "new_stage", "write_manifest", "read_manifest", "verify", "publish", "lock",
           "remove_stale", "file_sha256"]

OUTPUT_FOLDERS = ("figures", "tables", "derivatives", "results")
MANIFEST = Path("results") / "manifest.json"
LEDGER = Path(".analysis-outputs.json")  # every file the project may own in the output folder, kept across crashes
GITIGNORE = "*\n!.gitignore\n"  # figures/.gitignore, as the repository ships it
_STAGE_PREFIX = ".analysis-stage-"
_TRASH_PREFIX = ".analysis-old-"
_MARKER = ".written-by-analysis"
# folders of the project's own source that must never be an output folder
_SOURCE_FOLDERS = ("analysis", "chapters", "tests", "bench", "docs", ".git", ".github", ".ci", "_book", "_freeze",
                   "_parts", ".quarto")


class OutputError(ValueError):
    """The output folder cannot be used safely; the message names the path and the fix."""


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in blocks."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


# ----------------------------------------------------------------------------- where we may write

def check_output_dir(out: Path, project_dirs: list[Path]) -> None:
    """Refuse an output folder that is the file-system root, the home folder (or above it) or source code.

    Parameters
    ----------
    out : Path
        The resolved ``output.dir``.
    project_dirs : list of Path
        Folders holding the project (the current folder, the package's parent); their source folders
        (``analysis/``, ``chapters/``, ``tests/``, ...) and anything inside them are refused.
    """
    out = out.resolve()
    home = Path.home().resolve()
    if out == Path(out.anchor) or out == home or out in home.parents:
        raise OutputError(f"{out}: output.dir may not be the file-system root or the home folder (or above it); "
                          "set output.dir to a folder of its own, e.g. \"report-outputs\"")
    for root in project_dirs:
        for name in _SOURCE_FOLDERS:
            src = (root / name).resolve()
            if out == src or src in out.parents:
                raise OutputError(f"{out}: output.dir lies in the project's source folder {src}; set output.dir "
                                  "to the project folder (\".\") or a folder of its own")


def check_cache_dir(cache: Path, out: Path) -> None:
    """The cache folder may not lie inside a folder the project replaces when it publishes."""
    for name in OUTPUT_FOLDERS:
        folder = (out / name).resolve()
        if cache == folder or folder in cache.parents:
            raise OutputError(f"{cache}: output.cache_dir lies inside {folder}, which each run replaces; set "
                              "output.cache_dir to \".cache\" or a folder outside the output folders")


def check_owned(out: Path) -> None:
    """Raise :class:`OutputError` if an output folder holds anything the project did not write.

    Every file under ``figures/``, ``tables/``, ``derivatives/`` and ``results/`` must be listed in the
    manifest or the ownership ledger with the same SHA-256 (``figures/.gitignore`` with the repository's
    content is also ours).
    """
    manifest = read_manifest(out)
    owned = _read_ledger(out)
    for rel, digest in (manifest or {}).items():
        owned.setdefault(rel, set()).add(digest)
    for name in OUTPUT_FOLDERS:
        folder = out / name
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            raise OutputError(f"{folder}: not a folder the project wrote (a file or a link); move it away or set "
                              "output.dir to another folder")
        if not folder.exists():
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_dir() and not path.is_symlink():
                continue
            rel = path.relative_to(out).as_posix()
            if rel == MANIFEST.as_posix() and manifest is not None:
                continue
            if rel == "figures/.gitignore" and not path.is_symlink() and _read(path) == GITIGNORE:
                continue
            known = owned.get(rel)
            if not owned and (out / "results" / "results.json").is_file() and not path.is_symlink():
                raise OutputError(f"{folder}: outputs of an older version of this project (before 0.3.0, without "
                                  f"{MANIFEST}), which cannot tell its files from yours; move or delete "
                                  f"{', '.join(OUTPUT_FOLDERS)} under {out} once, or set output.dir to another folder")
            if path.is_symlink() or not known:
                raise OutputError(f"{path}: not written by this project, and publishing would replace "
                                  f"{folder}; move the file out of it, or set output.dir to another folder")
            if file_sha256(path) not in known:
                raise OutputError(f"{path}: changed since this project wrote it, and publishing would replace "
                                  f"{folder}; move the file out of it (keep your edit), or set output.dir to "
                                  "another folder")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


# ----------------------------------------------------------------------------- manifest

def write_manifest(stage: Path) -> dict[str, str]:
    """Hash every file of the staged output folders into ``results/manifest.json``; returns the entries."""
    files = {}
    for name in OUTPUT_FOLDERS:
        for path in sorted((stage / name).rglob("*")):
            rel = path.relative_to(stage).as_posix()
            if path.is_file() and rel != MANIFEST.as_posix():
                files[rel] = file_sha256(path)
    (stage / MANIFEST).write_text(json.dumps({"files": files}, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return files


def read_manifest(out: Path) -> dict[str, str] | None:
    """The manifest's ``{relative path: sha256}``, or None when there is none (or it is unreadable)."""
    try:
        stored = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        files = stored["files"]
        if isinstance(files, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            return files
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _read_ledger(out: Path) -> dict[str, set[str]]:
    try:
        stored = json.loads((out / LEDGER).read_text(encoding="utf-8"))["files"]
        return {str(k): {str(d) for d in v} for k, v in stored.items() if isinstance(v, list)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _write_ledger(out: Path, files: dict[str, set[str]]) -> None:
    tmp = out / f"{LEDGER}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"files": {k: sorted(v) for k, v in sorted(files.items())}}, indent=1) + "\n",
                   encoding="utf-8")
    os.replace(tmp, out / LEDGER)


def verify(out: Path) -> bool:
    """True when every file of the manifest exists under ``out`` with its recorded SHA-256."""
    files = read_manifest(out)
    if not files:
        return False
    for rel, digest in files.items():
        path = out / rel
        if ".." in Path(rel).parts or not path.is_file() or file_sha256(path) != digest:
            return False
    return True


# ----------------------------------------------------------------------------- staging and publishing

def new_stage(out: Path) -> Path:
    """A fresh staging folder inside ``out`` (same file system, so publishing is by rename)."""
    stage = out / f"{_STAGE_PREFIX}{uuid.uuid4().hex[:12]}"
    stage.mkdir()
    (stage / _MARKER).write_text("staging folder of a run of the analysis package; safe to delete\n")
    for name in OUTPUT_FOLDERS:
        (stage / name).mkdir()
    (stage / "figures" / ".gitignore").write_text(GITIGNORE)
    return stage


def remove_stale(out: Path) -> None:
    """Delete staging and old-generation folders left by a killed run (only folders carrying our marker)."""
    for prefix in (_STAGE_PREFIX, _TRASH_PREFIX):
        for folder in out.glob(f"{prefix}*"):
            discard(folder)
            if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
                folder.rmdir()  # killed between its creation and its marker: empty


def discard(folder: Path) -> None:
    """Delete a staging or old-generation folder of ours (one carrying our marker; never a link)."""
    if folder.is_dir() and not folder.is_symlink() and (folder / _MARKER).is_file():
        shutil.rmtree(folder, ignore_errors=True)


def publish(stage: Path, out: Path) -> None:
    """Move a complete staged generation into ``out`` (see the module docstring for the order)."""
    check_owned(out)  # again, under the lock: nothing the project did not write is ever moved
    old = _read_ledger(out)
    for rel, digest in (read_manifest(out) or {}).items():
        old.setdefault(rel, set()).add(digest)
    new = {rel: {digest} for rel, digest in (read_manifest(stage) or {}).items()}
    both = {rel: old.get(rel, set()) | new.get(rel, set()) for rel in {*old, *new}}
    _write_ledger(out, both)  # a crash below leaves both generations' files known as ours
    trash = out / f"{_TRASH_PREFIX}{uuid.uuid4().hex[:12]}"
    trash.mkdir()
    (trash / _MARKER).write_text("previous outputs of the analysis package; safe to delete\n")
    order = ("results", "figures", "tables", "derivatives")
    for name in order:  # results/ first: from here on no valid generation exists until the end
        if (out / name).exists():
            os.replace(out / name, trash / name)
    for name in order[1:]:
        os.replace(stage / name, out / name)
    os.replace(stage / "results", out / "results")  # the new generation becomes valid in one rename
    _write_ledger(out, new)
    discard(trash)


@contextlib.contextmanager
def lock(path: Path):
    """Exclusive lock on ``path`` for this process.

    A POSIX record lock (``lockf``), not ``flock``: it belongs to this process only, so the figure workers it
    forks do not inherit it, and it is released the moment this process ends, even if it is killed.
    """
    with open(path, "a+") as fh:
        fcntl.lockf(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(fh, fcntl.LOCK_UN)
