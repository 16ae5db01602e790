"""What each chapter of the book shows from the results: the Markdown it includes and the values it cites.

The chapters execute no code. A chapter holds the report's fixed prose and its structure (headings, the figure
and table divs with their labels, cross-references, citations); what depends on the results is written by the
pre-render hook (``python -m analysis --prerender``) before Quarto reads the chapters:

- each ``::: {.part file="_parts/<chapter>/<part>.md"} :::`` is a **part**: generated prose from the templates, a
  figure link (relative to the project; ``analysis/values.lua`` reads the file after the pre-render step and makes
  its links relative to the page: Quarto expands ``{{< include >}}`` before that step) or a Markdown table;
- each ``[r.<chapter>.<value>]{.value}`` is a **value** of ``_parts/values.yml`` (one of the project's
  ``metadata-files``, which Quarto reads again after the pre-render step), escaped as literal text unless the
  package wrote it as Markdown (:func:`analysis.text.md_value`), filled in by the same filter (Quarto's
  ``{{< meta >}}`` costs about 25 ms a call); ``[provenance.<value>]{.value}`` (commit,
  render date, Quarto version) comes from ``_parts/provenance.yml`` (:mod:`analysis.provenance`), rewritten at
  every render.

So a render starts no Jupyter kernel, and the HTML, PDF and Word books are made from the same Markdown. Every
part and value comes from the typed :class:`analysis.results.Results`; nothing is computed or rounded in a
chapter. :data:`CHAPTERS` maps each chapter to its parts and values; :func:`write_parts` writes them, rewriting a
file only when its text changed (``tests/test_chapters.py`` checks that every include and value a chapter names
is written, and the real renders that they show).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from . import checklist, metadata, report, tables, text
from .files import write_file
from .results import Results

__all__ = ["PARTS_DIR", "VALUES_FILE", "Chapter", "CHAPTERS", "chapter_names", "chapter_parts", "chapter_values", "write_parts",
           "write_values", "figure_link", "table"]

PARTS_DIR = Path("_parts")
"""The generated parts, relative to the project (gitignored; ``_`` keeps Quarto from rendering them)."""
VALUES_FILE = PARTS_DIR / "values.yml"
"""The chapters' values, read by Quarto as metadata (``metadata-files`` in ``_quarto.yml``)."""

TIMESERIES, STATMAP = "timeseries", "statmap"


def figure_link(res: Results, role: str, chapter_dir: str | Path, missing: str = "Not available in this run.") -> str:
    """A Markdown image link to a figure of the run, relative to ``chapter_dir``, or a note when it was not drawn."""
    if role in res.figures:
        return f"![]({os.path.relpath(res.figure(role), chapter_dir).replace(os.sep, '/')})"
    return f"*{text.md_escape(missing)}*"


def table(df: pd.DataFrame | None, missing: str = "Not computed.") -> str:
    """A Markdown table (every cell escaped unless the package marked it as Markdown), or ``missing``."""
    return text.md_escape(missing) if df is None else tables.markdown(df)


@dataclass(frozen=True)
class Chapter:
    """A chapter's generated content: ``parts(res, here)`` -> {part: Markdown}, ``values(res)`` -> {name: value};
    ``kinds``: the analyses it belongs to (``timeseries``: a 4D run; ``statmap``: an existing map)."""

    source: str  # the chapter's file, relative to the project
    parts: Callable[[Results, Path], dict[str, str]]
    values: Callable[[Results], dict[str, object]]
    kinds: tuple[str, ...] = (TIMESERIES, STATMAP)


def _index_parts(res, here):
    return {"fallback": report.fallback_callout(res), "keywords": report.keywords_line()}


def _index_values(res):
    c = res.contrast()
    p = c.primary
    return {"dataset": report.dataset_line(res), "threshold": p.label, "threshold_text": p.threshold_text,
            "n_pos": text.fmt_k(p.n_pos), "n_neg": text.fmt_k(p.n_neg), "direction": c.direction,
            "negative_direction": c.negative_direction}


def _data_parts(res, here):
    ds = res.dataset
    return {"fallback": report.fallback_callout(res),
            "tbl-data-summary": table(tables.dataset_summary(ds)), "tbl-events": table(tables.events(ds)),
            "fig-volumes": figure_link(res, "volumes", here), "fig-mean": figure_link(res, "mean", here),
            "fig-anat": figure_link(res, "anat", here, "No anatomical image comes with this dataset.")}


def _data_values(res):
    ds = res.dataset
    return {"description": ds.description, "dataset": ds.dataset, "t_r": f"{ds.t_r:g}", "n_scans": ds.n_scans,
            "anat_caption": ("Anatomical image supplied with the dataset (for the simulated data, the MNI152 "
                             "template)." if ds.is_simulated else "Anatomical image supplied with the dataset.")}


def _methods_parts(res, here):
    return {"methods": report.methods(res), "fig-design": figure_link(res, "design", here),
            "fig-contrasts": figure_link(res, "contrasts", here),
            "tbl-contrasts": table(tables.contrast_weights(res))}


def _methods_values(res):
    return {"n_regressors": res.model.n_regressors, "n_drift": res.model.n_drift, "n_scans": res.dataset.n_scans}


def _results_parts(res, here):
    c = res.contrast()
    return {"results": report.results_text(res),
            "fig-effect": figure_link(res, f"{c.name}.effect", here,
                                      "No effect-size map: the report starts from a statistical map."),
            "fig-zmap": figure_link(res, f"{c.name}.z", here), "tbl-thresholds": table(tables.thresholds(c)),
            "fig-thresholds": figure_link(res, f"{c.name}.thresholds", here),
            "fig-glass": figure_link(res, f"{c.name}.glass", here),
            "tbl-clusters-pos": table(tables.clusters(c, "+")), "tbl-clusters-neg": table(tables.clusters(c, "-"))}


def _results_values(res):
    c = res.contrast()
    return {"contrast": c.name, "direction": c.direction, "negative_direction": c.negative_direction,
            "sided": "two-sided" if res.config.inference.two_sided else "one-sided",
            "threshold": c.threshold_label, "min_distance": f"{res.config.inference.min_distance:g}",
            "atlas_caption": text.md(report.label_caption(res))}  # holds @citations


def _calibration_parts(res, here):
    main, reference = report.calibration(res)
    return {"calibration": report.calibration_text(res),
            "fig-calibration": figure_link(res, "calibration", here,
                                           "Calibration not computed (calibration.enabled = false)."),
            "tbl-calibration": table(tables.calibration(main, reference) if main is not None else None,
                                     "Calibration not computed."),
            "tbl-null-designs": table(tables.null_designs(main) if main is not None and main.n_null else None,
                                      "No null designs in this run."),
            "fig-calibration-reference": figure_link(
                res, "calibration_reference", here,
                'The reference model was not calibrated in this run (calibration.reference_model = "").')}


def _calibration_values(res):
    main, reference = report.calibration(res)
    return {"contrast": res.contrast().name, "noise_model": res.model.noise_model,
            "null_block_scans": main.null_block_scans if main is not None else "",
            "models": ("the noise model of this report" if reference is None else
                       f"the noise model of this report and for nilearn's reference model ({reference.noise_model})"),
            "reference": (f"nilearn's reference noise model ({reference.noise_model})" if reference is not None
                          else "the reference noise model")}


def _dmn_parts(res, here):
    return {"callout": report.dmn_callout(res), "dmn": report.dmn_text(res),
            "tbl-dmn-networks": table(report.dmn_table(res, "networks"), report.dmn_missing(res)),
            "fig-dmn-map": figure_link(res, "dmn.map", here), "fig-dmn-nodes": figure_link(res, "dmn.nodes", here),
            "fig-dmn-effects": figure_link(res, "dmn.effects", here),
            "fig-dmn-contours": figure_link(res, "dmn.contours", here),
            "tbl-dmn-overlap": table(report.dmn_table(res, "overlap")),
            "tbl-dmn-nodes": table(report.dmn_table(res, "nodes")),
            "fig-dmn-seed": figure_link(res, "dmn.seed", here),
            "tbl-atlases": table(report.dmn_table(res, "atlases"))}


def _dmn_values(res):
    return {k: v for k, v in asdict(report.dmn_facts(res)).items() if not isinstance(v, bool)}


def _overlap_parts(res, here):
    return {"overlap": report.dmn_overlap_text(res), "fig-dmn-overlap": figure_link(res, "dmn.contours", here),
            "tbl-dmn-overlap": table(report.dmn_table(res, "overlap"))}


def _contrast_values(res):
    c = res.contrast()
    return {"contrast": c.name, "threshold": c.threshold_label, "threshold_text": c.primary.threshold_text,
            "direction": c.direction, "negative_direction": c.negative_direction}


def _colophon_parts(res, here):
    return {"tbl-versions": table(pd.DataFrame(sorted(res.versions.items()), columns=["Package", "Version"])),
            "tbl-inputs": table(metadata.input_files(res)), "config": metadata.config_json(res)}


def _downloads_parts(res, here):
    c = res.contrast()
    viewer = (res.figure(f"{c.name}.viewer").read_text(encoding="utf-8") if f"{c.name}.viewer" in res.figures
              else "<p><em>The interactive viewer was not drawn in this run.</em></p>")
    # a raw HTML block: Quarto adds no CDN scripts, and the viewer (self-contained, jQuery inlined) needs nothing
    # from the network
    return {"tbl-downloads": table(metadata.shared_files(res, links_from=here)),
            "tbl-downloads-print": table(metadata.shared_files(res)),
            "fig-viewer": "```{=html}\n" + viewer + "\n```", "fig-viewer-static": figure_link(res, f"{c.name}.z", here)}


def _checklist_parts(res, here):
    items = checklist.checklist(res)
    return {"missing": checklist.missing_callout(items), "tbl-checklist": table(checklist.display(items))}


def _checklist_values(res):
    counts = checklist.summary(checklist.checklist(res))
    return {"reported": counts["reported"], "missing": counts["missing"], "not_applicable": counts["not applicable"]}


def _none(res):
    return {}


CHAPTERS: dict[str, Chapter] = {
    "index": Chapter("index.qmd", _index_parts, _index_values),
    "data": Chapter("chapters/01-data.qmd", _data_parts, _data_values, (TIMESERIES,)),
    "preprocessing": Chapter("chapters/07-preprocessing.qmd",
                             lambda res, here: {"preprocessing": report.preprocessing_section(res, str(here))},
                             _none, (TIMESERIES,)),
    "methods": Chapter("chapters/02-methods.qmd", _methods_parts, _methods_values, (TIMESERIES,)),
    "source": Chapter("chapters/02-source.qmd", lambda res, here: {"source": report.statmap_text(res)}, _none,
                      (STATMAP,)),
    "results": Chapter("chapters/03-results.qmd", _results_parts, _results_values),
    "calibration": Chapter("chapters/04-calibration.qmd", _calibration_parts, _calibration_values, (TIMESERIES,)),
    "dmn": Chapter("chapters/05-dmn.qmd", _dmn_parts, _dmn_values, (TIMESERIES,)),
    "overlap": Chapter("chapters/06-dmn-overlap.qmd", _overlap_parts, _contrast_values, (STATMAP,)),
    "colophon": Chapter("chapters/90-colophon.qmd", _colophon_parts, lambda res: {"cache_key": res.cache_key[:16]}),
    "downloads": Chapter("chapters/91-downloads.qmd", _downloads_parts, _contrast_values),
    "checklist": Chapter("chapters/92-checklist.qmd", _checklist_parts, _checklist_values, (TIMESERIES,)),
}
"""Every chapter of the single-run book, by the name its includes and values use (``_parts/<name>/``)."""


def _kind(res: Results) -> str:
    return TIMESERIES if res.dataset.has_time_series else STATMAP


def _chapters(res: Results) -> dict[str, Chapter]:
    return {name: ch for name, ch in CHAPTERS.items() if _kind(res) in ch.kinds}


def chapter_names(res: Results) -> list[str]:
    """The chapters (their ``_parts/`` folders) of this kind of analysis."""
    return list(_chapters(res))


def chapter_parts(res: Results, project: str | Path = ".") -> dict[str, dict[str, str]]:
    """{chapter: {part: Markdown}} for the chapters of this kind of analysis (links relative to the project)."""
    project = Path(project).resolve()
    return {name: ch.parts(res, project) for name, ch in _chapters(res).items()}


def chapter_values(res: Results) -> dict[str, dict[str, str]]:
    """{chapter: {value: Markdown}}: what ``[r.<chapter>.<value>]{.value}`` shows, each escaped as literal text
    unless the package wrote it as Markdown."""
    return {name: {k: str(text.md_value(v)) for k, v in ch.values(res).items()} for name, ch in _chapters(res).items()}


def write_values(values: dict[str, dict[str, str]], project: str | Path = ".") -> Path:
    """``_parts/values.yml``: ``r`` holds each chapter's values (``[r.<chapter>.<value>]{.value}``, analysis/values.lua)."""
    import yaml

    path = Path(project) / VALUES_FILE
    write_file(path, "# Generated by the pre-render step from the saved results; edit the config, not this file.\n"
                     + yaml.safe_dump({"r": values}, sort_keys=True, allow_unicode=True, width=1000))
    return path


def write_parts(res: Results, project: str | Path = ".") -> list[Path]:
    """Write every part and the values of the book's chapters for ``res``; returns the files (absolute)."""
    project = Path(project).resolve()
    written = []
    for chapter, parts in chapter_parts(res, project).items():
        for name, body in parts.items():
            path = project / PARTS_DIR / chapter / f"{name}.md"
            write_file(path, body.rstrip("\n") + "\n")
            written.append(path)
    written.append(write_values(chapter_values(res), project))
    return written

