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
import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import pandas as pd
import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, StrictStr, ValidationError, ValidationInfo,
                      field_validator, model_validator)

from . import text
from .config import ConfigError, describe_validation_error, read_config_file

if TYPE_CHECKING:
    from .results import Results

__all__ = ["Author", "ReportMetadata", "MetadataError", "validate_report", "from_toml", "to_quarto",
           "write_quarto_metadata", "METADATA_FILE", "DEFAULT_TITLE", "input_files", "shared_files"]

METADATA_FILE = Path("_report-metadata.yml")
DEFAULT_TITLE = "Listening vs rest: a first-level fMRI report"

_ORCID_RE = re.compile(r"^(?:https?://orcid\.org/)?(\d{4}-\d{4}-\d{4}-\d{3}[\dX])$")
_EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")
_CITE_ESCAPED = re.compile(r"(^|[\s(;])\\@(?=[A-Za-z0-9_])")  # an escaped bare @citekey in the abstract


class MetadataError(ConfigError):
    """A ``[report]`` value that cannot be used; the message names the file, the key and the fix."""


class _Table(BaseModel):
    """A table of ``[report]``: immutable, strict types, no unknown keys, surrounding spaces stripped."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, str_strip_whitespace=True)


class Author(_Table):
    """One author: a name, optionally an affiliation, an ORCID iD and an e-mail address."""

    name: str
    affiliation: str = ""
    orcid: str = ""  # bare iD, 0000-0002-1825-0097 (an https://orcid.org/ prefix is stripped)
    email: str = ""
    corresponding: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value:
            raise ValueError("every [[report.authors]] entry needs a non-empty name; write name = \"...\"")
        return value

    @field_validator("orcid")
    @classmethod
    def _bare_orcid(cls, value: str) -> str:
        m = _ORCID_RE.match(value)
        return m.group(1) if m else value  # checked below, where the message can name the author

    @model_validator(mode="after")
    def _ids(self) -> "Author":
        if self.orcid and not orcid_is_valid(self.orcid):
            raise ValueError(f"ORCID iD {self.orcid!r} of {self.name} is not valid (format "
                             "0000-0002-1825-0097, last character is a checksum); copy it from orcid.org")
        if self.email and not _EMAIL_RE.match(self.email):
            raise ValueError(f"e-mail {self.email!r} of {self.name} is not an address; write it as name@example.org")
        return self

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


class ReportMetadata(_Table):
    """What the title page shows (the ``[report]`` table); immutable, validated on creation.

    ``source`` (the file it came from) is not a field; :func:`validate_report` sets it.
    """

    title: str = DEFAULT_TITLE
    authors: Annotated[tuple[Author, ...], Field(strict=False)] = (Author(name="The analysis team"),)
    abstract: str = ""
    keywords: Annotated[tuple[StrictStr, ...], Field(strict=False, examples=[["fMRI", "GLM"]])] = ()

    _source: str = PrivateAttr("defaults")

    @property
    def source(self) -> str:
        return self._source

    @field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        if not value:
            raise ValueError("report.title must be a non-empty string; write the report's title")
        return value

    @field_validator("authors")
    @classmethod
    def _authors(cls, value: tuple[Author, ...]) -> tuple[Author, ...]:
        if not value:
            raise ValueError("[report] needs at least one [[report.authors]] entry with a name")
        return value

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not all(value):
            raise ValueError("report.keywords holds an empty keyword; remove it")
        if len(set(value)) != len(value):
            raise ValueError("report.keywords lists a keyword twice; remove the repeat")
        return value

    @model_validator(mode="after")
    def _remember_source(self, info: ValidationInfo) -> "ReportMetadata":
        if info.context and "source" in info.context:
            self._source = str(info.context["source"])
        return self

    def __eq__(self, other: object) -> bool:  # the values only, wherever they came from
        if not isinstance(other, ReportMetadata):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in type(self).model_fields)

    __hash__ = None  # type: ignore[assignment]

    @property
    def author_names(self) -> list[str]:
        return [a.name for a in self.authors]


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


def validate_report(data: Mapping[str, Any], source: str = "config") -> ReportMetadata:
    """The ``[report]`` table of a parsed config file (:func:`analysis.config.read_config_file`).

    ``data`` is the whole file: the analysis sections are ignored, a file without ``[report]`` gives the defaults.

    Raises
    ------
    MetadataError
        One line naming the file, the key and the fix.
    """
    table = data.get("report", {})
    try:
        return ReportMetadata.model_validate(table, context={"source": source})
    except ValidationError as exc:
        raise MetadataError(describe_validation_error(exc, source, ReportMetadata, prefix="report.")) from None


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
    return validate_report(*read_config_file(path, MetadataError))


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


def input_files(res: "Results") -> pd.DataFrame:
    """The input files with their size and SHA-256 as recorded when the results were computed."""
    rows = []
    for name, entry in sorted(res.dataset.files.items()):
        path = Path(entry.path)
        size = f"{path.stat().st_size:,}" if path.exists() else "missing"
        # a checksum is one 64-character word: in HTML it may wrap anywhere (report.scss), not widen the table
        rows.append({"Input file": name, "Size (bytes)": size,
                     "SHA-256": text.md("[" + text.md_escape(entry.sha256) + "]{.checksum}")})
    return pd.DataFrame(rows, columns=["Input file", "Size (bytes)", "SHA-256"])


def config_json(res: "Results") -> str:
    """The full configuration as a fenced JSON block (Markdown)."""
    return "```json\n" + json.dumps(res.config.model_dump(mode="json"), indent=2) + "\n```"


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
