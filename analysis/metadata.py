"""Title-page metadata of the report (title, authors, abstract, keywords) from the ``[report]`` config table.

The ``[report]`` table of ``analysis.toml`` describes the *document*, not the analysis, so it is read
here, apart from :class:`~analysis.config.Config`: editing an author or the abstract never changes the
analysis cache key. Example::

    [report]
    title = "Listening vs rest: a first-level fMRI report"
    abstract = "One or more paragraphs of plain text; bare @citekeys are cited."
    keywords = ["fMRI", "general linear model", "auditory cortex"]

    [[report.authors]]
    name = "Ada Lovelace"
    affiliation = "Analytical Engine Lab, University of London"
    orcid = "0000-0002-1825-0097"
    email = "ada@example.org"        # optional
    corresponding = true             # optional

:func:`write_quarto_metadata` turns it into a Quarto metadata file (``_report-metadata.yml``) that
``_quarto.yml`` lists under ``metadata-files``; the pre-render step writes it (``python -m
analysis.metadata``), and Quarto >= 1.5 re-reads the project configuration after the pre-render
scripts, so the title page of the HTML, PDF and Word outputs always matches the config.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

if TYPE_CHECKING:
    from .results import Results

__all__ = ["Author", "ReportMetadata", "MetadataError", "from_toml", "to_quarto", "write_quarto_metadata",
           "METADATA_FILE", "DEFAULT_TITLE", "provenance", "input_files", "shared_files"]

METADATA_FILE = Path("_report-metadata.yml")
DEFAULT_TITLE = "Listening vs rest: a first-level fMRI report"

_ORCID_RE = re.compile(r"^(?:https?://orcid\.org/)?(\d{4}-\d{4}-\d{4}-\d{3}[\dX])$")
_EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")
_CITE_ESCAPED = re.compile(r"(^|[\s(;])\\@(?=[A-Za-z0-9_])")  # an escaped bare @citekey in the abstract


class MetadataError(ValueError):
    """A ``[report]`` value that cannot be used; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class Author:
    """One author: a name, optionally an affiliation, an ORCID iD and an e-mail address."""

    name: str
    affiliation: str = ""
    orcid: str = ""  # bare iD, 0000-0002-1825-0097 (an https://orcid.org/ prefix is stripped)
    email: str = ""
    corresponding: bool = False

    def to_quarto(self) -> dict[str, Any]:
        """Quarto's author schema (``name``, ``orcid``, ``email``, ``affiliations``)."""
        from .text import md_escape

        out: dict[str, Any] = {"name": str(md_escape(self.name))}
        if self.orcid:
            out["orcid"] = self.orcid
        if self.email:
            out["email"] = self.email
        if self.corresponding:
            out["corresponding"] = True
        if self.affiliation:
            out["affiliations"] = [{"name": str(md_escape(self.affiliation))}]
        return out


@dataclass(frozen=True)
class ReportMetadata:
    """What the title page shows; immutable, validated on creation."""

    title: str = DEFAULT_TITLE
    authors: tuple[Author, ...] = (Author("The analysis team"),)
    abstract: str = ""
    keywords: tuple[str, ...] = ()
    source: str = "defaults"  # the file this came from, for error messages

    def __post_init__(self):
        where = self.source
        if not isinstance(self.title, str) or not self.title.strip():
            raise MetadataError(f"{where}: report.title must be a non-empty string")
        if not self.authors:
            raise MetadataError(f"{where}: [report] needs at least one [[report.authors]] entry with a name")
        for a in self.authors:
            if not a.name.strip():
                raise MetadataError(f"{where}: every [[report.authors]] entry needs a non-empty name")
            if a.orcid and not orcid_is_valid(a.orcid):
                raise MetadataError(f"{where}: ORCID iD {a.orcid!r} of {a.name} is not valid (format "
                                    "0000-0002-1825-0097, last character is a checksum); copy it from orcid.org")
            if a.email and not _EMAIL_RE.match(a.email):
                raise MetadataError(f"{where}: e-mail {a.email!r} of {a.name} is not an address")
        if len(set(self.keywords)) != len(self.keywords):
            raise MetadataError(f"{where}: report.keywords lists a keyword twice")

    @property
    def author_names(self) -> list[str]:
        return [a.name for a in self.authors]

    @classmethod
    def from_dict(cls, table: dict[str, Any], source: str = "config") -> "ReportMetadata":
        """Build from the ``[report]`` table (as read from TOML); unknown keys get the closest valid name."""
        if not isinstance(table, dict):
            raise MetadataError(f"{source}: [report] must be a table")
        _check_keys(table, ("title", "authors", "abstract", "keywords"), "report.", source)
        kwargs: dict[str, Any] = {"source": source}
        for key in ("title", "abstract"):
            if key in table:
                if not isinstance(table[key], str):
                    raise MetadataError(f"{source}: report.{key} must be a string, not {table[key]!r}")
                kwargs[key] = table[key].strip()
        if "keywords" in table:
            kw = table["keywords"]
            if not isinstance(kw, list) or not all(isinstance(k, str) and k.strip() for k in kw):
                raise MetadataError(f"{source}: report.keywords must be a list of strings, e.g. [\"fMRI\", \"GLM\"]")
            kwargs["keywords"] = tuple(k.strip() for k in kw)
        if "authors" in table:
            raw = table["authors"]
            if not isinstance(raw, list) or not all(isinstance(a, dict) for a in raw):
                raise MetadataError(f"{source}: report.authors must be a list of tables; write one "
                                    "[[report.authors]] block per author with name = \"...\"")
            kwargs["authors"] = tuple(_author(a, source) for a in raw)
        return cls(**kwargs)


def orcid_is_valid(orcid: str) -> bool:
    """Format and ISO 7064 11,2 checksum of an ORCID iD (e.g. ``0000-0002-1825-0097``)."""
    m = _ORCID_RE.match(orcid.strip())
    if not m:
        return False
    digits = m.group(1).replace("-", "")
    total = 0
    for ch in digits[:-1]:
        total = (total + int(ch)) * 2
    check = (12 - total % 11) % 11
    return digits[-1] == ("X" if check == 10 else str(check))


def _author(d: dict[str, Any], source: str) -> Author:
    _check_keys(d, ("name", "affiliation", "orcid", "email", "corresponding"), "report.authors.", source)
    if not isinstance(d.get("name"), str):
        raise MetadataError(f"{source}: every [[report.authors]] entry needs name = \"...\"")
    for key in ("affiliation", "orcid", "email"):
        if key in d and not isinstance(d[key], str):
            raise MetadataError(f"{source}: report.authors.{key} must be a string, not {d[key]!r}")
    if "corresponding" in d and not isinstance(d["corresponding"], bool):
        raise MetadataError(f"{source}: report.authors.corresponding must be true or false")
    orcid = d.get("orcid", "").strip()
    m = _ORCID_RE.match(orcid)
    return Author(name=d["name"].strip(), affiliation=d.get("affiliation", "").strip(),
                  orcid=m.group(1) if m else orcid, email=d.get("email", "").strip(),
                  corresponding=d.get("corresponding", False))


def _check_keys(d: dict, known: tuple[str, ...], prefix: str, source: str) -> None:
    for key in d:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
            hint = f"did you mean '{prefix}{close[0]}'?" if close else f"valid keys: {', '.join(known)}"
            raise MetadataError(f"{source}: unknown key '{prefix}{key}'; {hint}")


def from_toml(path: str | Path | None = None) -> ReportMetadata:
    """Read the ``[report]`` table of a TOML config (only that table; the analysis sections are ignored).

    Parameters
    ----------
    path : str or Path, optional
        As for :func:`analysis.config.load_config`: defaults to ``$ANALYSIS_CONFIG``, else
        ``analysis.toml``; a missing default file, or a file without ``[report]``, gives the defaults.

    Returns
    -------
    ReportMetadata

    Raises
    ------
    MetadataError
        One line naming the file, the key and the fix.
    """
    from .config import config_path, read_toml

    path = config_path(path)
    if path is None:
        return ReportMetadata()
    data = read_toml(path, MetadataError)
    if "report" not in data:
        return ReportMetadata(source=str(path))
    return ReportMetadata.from_dict(data["report"], source=str(path))


def to_quarto(meta: ReportMetadata, *, simulated: bool = False, subtitle: str = "") -> dict[str, Any]:
    """The Quarto metadata (a plain dict) for ``metadata-files``.

    ``book.title``, ``book.author`` and ``book.abstract`` are book options: Quarto puts them on the
    title page of the PDF and Word books and on the HTML home page only (a top-level ``abstract`` would
    be repeated on every HTML chapter). ``keywords`` go to the PDF and Word books only (title page and
    document properties): as top-level metadata Quarto would repeat them under every HTML chapter's
    title; the HTML home page lists them itself (``index.qmd``).
    """
    from .text import md_escape

    # Quarto reads every metadata string as Markdown: user text is escaped so it shows as written
    # (``<script>``, ``{{< ... >}}``, ``[x](javascript:...)`` stay literal); the abstract keeps its paragraphs
    # and bare @citekeys
    title = md_escape(meta.title) + (" \u2014 SIMULATED DATA" if simulated else "")
    book: dict[str, Any] = {"title": str(title), "author": [a.to_quarto() for a in meta.authors]}
    if subtitle:
        book["subtitle"] = str(md_escape(subtitle))
    if meta.abstract:
        book["abstract"] = _CITE_ESCAPED.sub(r"\1@", str(md_escape(meta.abstract, keep_paragraphs=True)))
    out: dict[str, Any] = {"book": book}
    if meta.keywords:
        out["format"] = {fmt: {"keywords": [str(md_escape(k)) for k in meta.keywords]} for fmt in ("typst", "docx")}
    return out


def write_quarto_metadata(meta: ReportMetadata, path: str | Path = METADATA_FILE, **dataset) -> Path:
    """Write :func:`to_quarto` as YAML (atomically: a render never reads a half-written file)."""
    path = Path(path)
    body = ("# Generated from the [report] table of the config by `python -m analysis.metadata`\n"
            "# (Quarto pre-render step); edit the config, not this file.\n"
            + yaml.safe_dump(to_quarto(meta, **dataset), sort_keys=False, allow_unicode=True, width=100))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(body, encoding="utf-8")
    tmp.replace(path)
    return path


# ----------------------------------------------------------------------------- provenance (colophon)

def _git(*args: str, cwd: str | Path = ".") -> str:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _quarto_version() -> str:
    try:
        return subprocess.run(["quarto", "--version"], capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def provenance(project: str | Path = ".", now: datetime | None = None) -> dict[str, str]:
    """Where and when this rendering happened: git commit, platform, render date, Quarto version.

    Every value is a non-empty display string (``"not a git checkout"``, ``"not found"`` when unknown).
    """
    commit = _git("rev-parse", "HEAD", cwd=project)
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no", cwd=project)) if commit else False
    now = now or datetime.now(timezone.utc)
    return {
        "commit": (commit + (" (with uncommitted changes)" if dirty else "")) if commit else "not a git checkout",
        "commit_short": commit[:10] if commit else "not a git checkout",
        "render_date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "platform": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "quarto": os.environ.get("QUARTO_VERSION") or _quarto_version() or "not found",
    }


def input_files(res: "Results") -> pd.DataFrame:
    """The input files with their size and SHA-256 as recorded when the results were computed."""
    rows = []
    for name, entry in sorted(res.dataset.files.items()):
        path = Path(entry["path"])
        size = f"{path.stat().st_size:,}" if path.exists() else "missing"
        rows.append({"Input file": name, "Size (bytes)": size, "SHA-256": entry["sha256"]})
    return pd.DataFrame(rows, columns=["Input file", "Size (bytes)", "SHA-256"])


def config_json(res: "Results") -> str:
    """The full configuration as a fenced JSON block (Markdown)."""
    return "```json\n" + json.dumps(res.config.to_dict(), indent=2) + "\n```"


# ----------------------------------------------------------------------------- shared outputs (downloads)

_ROLES = {"z": "z map, unthresholded", "effect": "effect size map, unthresholded",
          "variance": "variance of the effect size (for fixed and group effects)",
          "z_thresholded": "z map at the primary threshold", "clusters_img": "cluster labels (1, 2, ... as in the table)",
          "clusters": "cluster table (peaks and sub-peaks)"}


def shared_files(res: "Results", links_from: str | Path | None = None) -> pd.DataFrame:
    """Every shareable output of every contrast: NIfTI maps (with their JSON sidecars) and TSV tables.

    Parameters
    ----------
    res : Results
    links_from : path, optional
        Folder of the page that shows the table (``chapters``); file names become Markdown links relative
        to it, so they work in the rendered site when ``project: resources`` copies the files. ``None``:
        plain file names (PDF and Word).
    """
    rows = []
    for c in res.contrasts.values():
        roles = [r for r in _ROLES if r in c.files] + [r for r in c.files if r not in _ROLES]
        for role in roles:
            rel = c.files[role]
            path = res.path(rel)
            if not path.exists():
                continue
            cells = [_file_cell(path, rel, links_from)]
            sidecar = path.with_name(path.name.replace(".nii.gz", ".json"))
            if rel.endswith(".nii.gz") and sidecar.exists():
                cells.append(_file_cell(sidecar, rel.replace(".nii.gz", ".json"), links_from, "JSON sidecar"))
            from .text import md, md_escape

            rows.append({"Contrast": c.name, "Content": _ROLES.get(role, role),
                         "File": md(" + ".join(md_escape(cell) for cell in cells)),
                         "Size": _size(path)})
    design = res.path("tables/design.tsv")
    if design.exists():
        rows.append({"Contrast": "all", "Content": "design matrix (one row per scan)",
                     "File": _file_cell(design, "tables/design.tsv", links_from), "Size": _size(design)})
    return pd.DataFrame(rows, columns=["Contrast", "Content", "File", "Size"])


def _file_cell(path: Path, rel: str, links_from, label: str | None = None) -> str:
    if links_from is None:
        from .text import md, md_code

        return md_code(rel) if label is None else "JSON sidecar"
    href = os.path.relpath(path.resolve(), Path(links_from).resolve()).replace(os.sep, "/")
    from urllib.parse import quote

    from .text import md, md_escape

    return md(f"[{md_escape(label or path.name)}]({quote(str(href))})")  # %-encoded: no ) or space ends it


def _size(path: Path) -> str:
    n = path.stat().st_size
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB" if n >= 1e3 else f"{n} B"


def main(argv: list[str] | None = None) -> int:
    """``python -m analysis.metadata [--config analysis.toml] [--out _report-metadata.yml]``."""
    parser = argparse.ArgumentParser(prog="python -m analysis.metadata",
                                     description="Write the Quarto title-page metadata from [report].")
    parser.add_argument("--config", "-c", default=None, help="TOML config (default: analysis.toml)")
    parser.add_argument("--out", "-o", default=str(METADATA_FILE), help="output YAML file")
    args = parser.parse_args(argv)
    try:
        write_quarto_metadata(from_toml(args.config), args.out)
    except (MetadataError, OSError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
