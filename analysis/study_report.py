"""The study report (issue 19): ``quarto render --profile study`` after ``fmri-report study``.

Everything here reads the saved study (:class:`analysis.study.StudyResults`, ``results/study.json``, and the files
it names) and returns strings, tables or files; the group analysis is never refitted.

The report step (:func:`prepare`, run by the profile's pre-render hook ``python -m analysis.study_report
--prerender``) writes under ``<study>/report/`` (beside, never inside, the study's published ``figures/ tables/
derivatives/ results/`` folders):

* the group figures (glass brain and z map at the primary threshold, every threshold side by side) and one
  fixed-effects z map per subject, drawn with matplotlib's Agg backend from the saved maps by the plotting
  functions of :mod:`analysis.figures` (:class:`~analysis.figures.draw.FigureSpec`,
  :func:`~analysis.figures.draw.draw_spec`); the per-run figures are never needed;
* ``report.json``, the typed :class:`StudyReport`: each subject's peaks at the configured primary threshold of its
  fixed-effects z map and the calibration verdict of each of its runs (from the run's saved ``Results``), with the
  key of what each entry was made from, so that a new subject or a changed map redoes that subject only.

The pre-render hook then writes one plain Markdown page per subject (``chapters/study/subjects/sub-<label>.md``; no
kernel, so a page costs pandoc's time only) and the book's chapter list. Quarto's book chapters are static in
the profile file, but Quarto reads the project configuration again after the pre-render scripts (Quarto >= 1.5),
including the ``metadata-files`` of ``_quarto.yml``: the hook writes ``_report-metadata.yml`` (the title page and
``book.chapters``: the profile's chapters with a "Subjects" part of the generated pages after the subject table),
and Quarto merges the profile's own list into it, each chapter once. The other profiles' pre-render hook writes the
same file for their book, so the two never mix.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import serial, text
from .files import write_file
from .inference import ThresholdResult
from .serial import JSON_CONFIG, Table

__all__ = ["RunCalibration", "SubjectSummary", "StudyReport", "load", "prepare", "load_report", "figure_specs",
           "subject_figure_specs", "calibration_verdict", "methods_text", "results_section", "subject_table",
           "subject_page", "write_pages", "chapter_list", "write_book_metadata", "preface_facts", "figure",
           "REPORT_DIR", "PAGES_DIR", "PROFILE_FILE"]

REPORT_DIR = Path("report")  # inside the study folder
REPORT_FILE = REPORT_DIR / "report.json"
PAGES_DIR = Path("chapters") / "study" / "subjects"  # generated subject pages, relative to the project
PROFILE_FILE = Path("_quarto-study.yml")
STUDY_CHAPTERS = Path("chapters") / "study"
HOME_PAGE = "index.study.qmd"
NOT_COMPUTED = "not computed"
_FIGURE_CODE = ("figures/maps.py", "figures/_base.py", "figures/draw.py", "study_report.py")


# ----------------------------------------------------------------------------- the typed report step

@dataclass(frozen=True)
class RunCalibration:
    """The calibration verdict of one run, from its saved ``Results.calibration`` (``not computed`` without)."""

    __pydantic_config__ = JSON_CONFIG

    run: str
    verdict: str  # "trustworthy", "not trustworthy" or "not computed"
    null_sd: float = float("nan")  # empirical-null SD of the run's z map
    noise_model: str = ""


@dataclass(frozen=True)
class SubjectSummary:
    """What a subject's page shows beyond :class:`analysis.study.SubjectResult`: peaks, run calibration, figures."""

    __pydantic_config__ = JSON_CONFIG

    subject: str
    key: str  # hash of what this entry was made from (maps, run results, code)
    calibration: tuple[RunCalibration, ...] = ()
    threshold: ThresholdResult | None = None  # ThresholdResult of the subject's fixed-effects z map (None: left out)
    clusters: Table | None = None  # peaks and sub-peaks at that threshold (Harvard-Oxford labels in MNI space)
    figures: dict[str, str] = field(default_factory=dict)  # role -> path relative to the study folder


@dataclass(frozen=True)
class StudyReport:
    """``<study>/report/report.json``: the group figures and every subject's summary."""

    __pydantic_config__ = JSON_CONFIG

    group_key: str
    figures: dict[str, str]  # role -> path relative to the study folder
    subjects: dict[str, SubjectSummary]


def load(config=None):
    """The saved study of the config (``$ANALYSIS_CONFIG`` or ``analysis.toml``), for the chapters."""
    from .config import Config, load_config
    from .study import load_study

    if not isinstance(config, Config):
        config = load_config(config)
    return load_study(config)


def _sha(path: Path) -> str:
    from .outputs import file_sha256

    return file_sha256(path) if path.is_file() else "missing"


def _code_key() -> str:
    here = Path(__file__).parent
    h = hashlib.sha256()
    for rel in _FIGURE_CODE:
        h.update((here / rel).read_bytes())
    return h.hexdigest()


def _key(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _group_entities(study):
    from .derivatives import RunEntities

    return RunEntities(task=study.task, space=study.space)


def _png(entities, **more) -> str:
    from .derivatives import bids_name

    return (REPORT_DIR / "figures" / bids_name(entities, "statmap", ".png", **more)).as_posix()


def _top_peak(clusters) -> tuple[float, float, float] | None:
    if clusters is None or clusters.empty:
        return None
    main = clusters[clusters["Cluster ID"].astype(str).str.isdigit()]
    if main.empty:
        return None
    row = main.loc[main["Peak Stat"].astype(float).abs().idxmax()]
    return float(row["X"]), float(row["Y"]), float(row["Z"])


def figure_specs(study) -> list:
    """The group figures of every group contrast: glass brain and z map at the primary threshold, all thresholds."""
    from .figures import MNI_BACKGROUND
    from .figures.draw import FigureSpec, Image, display_cut

    ent = _group_entities(study)
    out = []
    for c in study.contrasts.values():
        p = c.primary
        primary = Image(c.files[f"thresholded.{c.primary_key}"])
        out.append(FigureSpec(f"{c.name}.glass", _png(ent, contrast=c.entity, stat="z", desc="glass"),
                              "maps.plot_glass", {"thresholded_img": primary}))
        out.append(FigureSpec(f"{c.name}.z", _png(ent, contrast=c.entity, stat="z", desc="primary"), "maps.plot_map",
                              {"img": primary, "bg_img": MNI_BACKGROUND, "threshold": display_cut(p),
                               "cut_coords": _top_peak(c.clusters), "colorbar_label": "z"}))
        out.append(FigureSpec(f"{c.name}.thresholds", _png(ent, contrast=c.entity, stat="z", desc="thresholds"),
                              "maps.plot_threshold_panel",
                              {"thresholded": {t.key: Image(c.files[f"thresholded.{t.key}"]) for t in c.thresholds},
                               "labels": {t.key: t.label for t in c.thresholds},
                               "counts": {t.key: f"{t.n_pos} + / {t.n_neg} \u2212 voxels" for t in c.thresholds}}))
    return out


def subject_figure_specs(study, subject, clusters=None, threshold: ThresholdResult | None = None) -> list:
    """A subject's fixed-effects z map on the MNI152 template, drawn beyond the z cut-off of its threshold (every
    voxel when nothing can pass) and cut through its highest peak; none for a subject left out."""
    from .contrasts import entity
    from .derivatives import RunEntities
    from .figures import MNI_BACKGROUND
    from .figures.draw import FigureSpec, Image, display_cut

    if not subject.included or "z" not in subject.files:
        return []
    ent = RunEntities(sub=subject.subject, task=study.task, space=study.space)
    cut = display_cut(threshold) if threshold is not None and threshold.has_cutoff else None
    return [FigureSpec("z", _png(ent, contrast=entity(study.first_level_contrast), stat="z", desc="fixedeffects"),
                       "maps.plot_map", {"img": Image(subject.files["z"]), "bg_img": MNI_BACKGROUND, "threshold": cut,
                                         "cut_coords": _top_peak(clusters), "colorbar_label": "z"})]


def calibration_verdict(study, run) -> RunCalibration:
    """The verdict of one run from its saved ``Results`` (``not computed`` when it has none, or was left out)."""
    from .results import Results

    label = run.run or "1"
    path = study.path(run.output_dir) / "results" / "results.json" if run.output_dir else None
    if not run.ok or path is None or not path.is_file():
        return RunCalibration(label, NOT_COMPUTED)
    res = Results.from_json(path)
    if res.calibration is None:
        return RunCalibration(label, NOT_COMPUTED)
    main = res.calibration.main
    return RunCalibration(label, "trustworthy" if main.trustworthy else "not trustworthy", float(main.null_sd),
                          main.noise_model)


def _subject_threshold_spec(config):
    from .inference import threshold_specs

    specs = {s.key: s for s in threshold_specs(config.inference)}
    return specs.get(config.inference.primary, specs["fdr_cluster"])


def _summarize(study, subject, key: str, atlases) -> SubjectSummary:
    """Peaks of the subject's fixed-effects z map at the primary threshold, and its runs' calibration."""
    import nibabel as nib

    from . import inference

    calibration = tuple(calibration_verdict(study, r) for r in subject.runs)
    if not subject.included or "z" not in subject.files:
        return SubjectSummary(subject.subject, key, calibration)
    z_img = nib.load(study.path(subject.files["z"]))
    mask_img = nib.Nifti1Image((abs(z_img.get_fdata()) > 0).astype("uint8"), z_img.affine)
    if "variance" in subject.files:
        var = nib.load(study.path(subject.files["variance"]))
        mask_img = nib.Nifti1Image((var.get_fdata() > 0).astype("uint8"), var.affine)
    z_img = inference.mask_map(z_img, mask_img)
    thr_img, thr = inference.apply_threshold(z_img, mask_img, _subject_threshold_spec(study.config))
    clusters, label_img = inference.cluster_table(z_img, thr, study.config.inference.min_distance, mask_img)
    if not clusters.empty and atlases is not None:
        from .atlas import label_cluster_table

        clusters = label_cluster_table(clusters, label_img, atlases, space=study.space)
        clusters.attrs = {}
    return SubjectSummary(subject.subject, key, calibration, thr, clusters)


def load_report(study) -> StudyReport | None:
    """The saved report step of ``study`` (None when :func:`prepare` has not run)."""
    path = study.path(REPORT_FILE.as_posix())
    if not path.is_file():
        return None
    try:
        return serial.from_json(StudyReport, path.read_bytes())
    except ValueError:
        return None


def prepare(study, n_jobs: int | None = None) -> StudyReport:
    """The report step: group figures, subject summaries and figures, redone only where their inputs changed.

    Each entry carries the key of its inputs (the study results for the group figures; a subject's maps and its
    runs' saved results for the subject), together with the figure code; an entry whose key and files are unchanged
    is kept as it is. Figures are drawn in :func:`analysis.figures.parallel.draw_all` worker processes.
    """
    from .figures.draw import draw_spec
    from .figures.parallel import default_n_jobs, draw_all

    root = Path(study.output_dir)
    old = load_report(study)
    code = _code_key()
    specs = []
    group_key = _key(_sha(root / "results" / "study.json"), code)
    group_specs = figure_specs(study)
    group_figures = {s.role: s.path for s in group_specs}
    if old is None or old.group_key != group_key or not all((root / p).is_file() for p in old.figures.values()):
        specs += group_specs
    subjects: dict[str, SubjectSummary] = {}
    atlases = None
    for s in study.subjects:
        parts = [s.subject, code, serial.to_json(s)]
        parts += [_sha(study.path(rel)) for rel in sorted(s.files.values())]
        parts += [_sha(study.path(r.output_dir) / "results" / "results.json") for r in s.runs if r.output_dir]
        key = _key(*parts)
        prev = old.subjects.get(s.subject) if old is not None else None
        if prev is not None and prev.key == key and all((root / p).is_file() for p in prev.figures.values()):
            subjects[s.subject] = prev
            continue
        if atlases is None and study.space.upper().startswith("MNI") and s.included:
            from .atlas import load_label_atlases  # the Harvard-Oxford atlases the group tables are labelled with
            from .data import nilearn_data_dir

            atlases = load_label_atlases(nilearn_data_dir(study.config))
        summary = _summarize(study, s, key, atlases)
        sub_specs = subject_figure_specs(study, s, summary.clusters, summary.threshold)
        specs += sub_specs
        subjects[s.subject] = dataclasses.replace(summary, figures={x.role: x.path for x in sub_specs})
    if specs:
        draw_all([(draw_spec, (spec, root), {}) for spec in specs],
                 n_jobs=default_n_jobs() if n_jobs is None else n_jobs)
    report = StudyReport(group_key=group_key, figures=group_figures, subjects=subjects)
    path = root / REPORT_FILE
    write_file(path, serial.to_json(report))
    return report


# ----------------------------------------------------------------------------- prose and tables for the chapters

def _n_word(n: int) -> str:
    from .report import _NUMBER_WORDS

    return _NUMBER_WORDS.get(n, str(n))


def methods_text(study) -> str:
    """Subjects, runs, the first-level model, fixed effects, the group model, thresholds and the permutation test."""
    from .noise import NOISE_MODELS
    from .report import HRF_TEXT

    c = study.contrast()
    runs = [r for s in study.subjects for r in s.runs]
    used = [r for r in runs if r.ok]
    scans = sorted({r.n_scans for r in used})
    first = text.render("study_first_level.md.j2", s=study, glm=study.config.glm, bids=study.config.bids,
                        n_runs=len(runs), n_used=len(used), scans=scans,
                        hrf=HRF_TEXT[study.config.glm.hrf_model],
                        noise=text.md(NOISE_MODELS[study.config.glm.noise_model].cited_description),
                        contrast_expression=study.config.contrasts[study.first_level_contrast])
    thresholds = text.render("study_thresholds.md.j2", c=c, inf=study.config.inference,
                             labels=[t.label for t in c.thresholds], n_ways=_n_word(len(c.thresholds)))
    return "\n\n".join([first, study.methods_text(), thresholds])


def figure(study, rel: str | None, missing: str = "Not drawn.", here: str | Path = ".") -> str:
    """A Markdown image link to a file of the study folder, relative to the folder of the page that shows it
    (``here``: relative to the working folder, the project's in the pre-render hook; a chapter's part links from
    the project, which ``analysis/values.lua`` makes relative to the page)."""
    if not rel or not study.path(rel).is_file():
        return f"*{text.md_escape(missing)}*"
    return f"![]({os.path.relpath(study.path(rel), here).replace(os.sep, '/')})"


def permutation_table(c) -> pd.DataFrame:
    """Voxels surviving each family-wise error correction of the permutation test."""
    p = c.permutation
    alpha = text.fmt_num(p.alpha, 2)
    rows = [{"Method": "voxel-level FWE (maximum statistic)", f"Voxels with FWE p < {alpha}": f"{p.n_voxel_fwe:,}"},
            {"Method": f"cluster-size FWE (cluster-forming p < {p.cdt_p:g})",
             f"Voxels with FWE p < {alpha}": f"{p.n_cluster_fwe:,}"},
            {"Method": "TFCE FWE", f"Voxels with FWE p < {alpha}": f"{p.n_tfce_fwe:,}" if p.tfce
             else f"{NOT_COMPUTED} ({p.tfce_reason})"}]
    return pd.DataFrame(rows)


def _clusters_caption(c) -> str:
    labelled = "Label" in c.clusters.columns
    return (f"Clusters of the group contrast *{text.md_escape(c.name)}* at {text.md_escape(c.primary.label)} "
            f"({text.md_escape(c.primary.threshold_text)}): peaks and sub-peaks"
            + (", with Harvard-Oxford labels [@desikan2006]." if labelled else "."))


def results_section(study, report: StudyReport | None = None) -> str:
    """The group results chapter body (Markdown): per group contrast the prose, maps, thresholds, clusters and
    permutation test, then the group Default Mode Network paragraph."""
    from . import tables

    report = report if report is not None else load_report(study)
    figs = report.figures if report is not None else {}
    out = []
    for c in study.contrasts.values():
        e = c.entity
        p = c.primary
        out.append(f"## Group contrast *{text.md_escape(c.name)}* {{#sec-group-{e}}}")
        out.append(study.results_text(c.name))
        out.append(f"@fig-group-{e}-glass and @fig-group-{e}-z show the group map at {text.md_escape(p.label)} "
                   f"({text.md_escape(p.threshold_text)}); @tbl-group-{e}-thresholds and @fig-group-{e}-thresholds "
                   f"compare every threshold; @tbl-group-{e}-clusters lists the clusters"
                   + (f" and @tbl-group-{e}-permutation the permutation test." if c.permutation is not None else "."))
        out.append(f"::: {{#fig-group-{e}-glass}}\n{figure(study, figs.get(f'{c.name}.glass'))}\n\n"
                   f"Glass brain of the group z map of *{text.md_escape(c.name)}* at {text.md_escape(p.label)} "
                   f"({text.md_escape(p.threshold_text)}), {study.n_subjects} subjects.\n:::")
        out.append(f"::: {{#fig-group-{e}-z}}\n{figure(study, figs.get(f'{c.name}.z'))}\n\n"
                   f"Group z map of *{text.md_escape(c.name)}* at {text.md_escape(p.label)} on the MNI152 template"
                   + (", cut through the highest peak." if _top_peak(c.clusters) else ".") + "\n:::")
        out.append(f"### Thresholds side by side {{#sec-group-{e}-thresholds}}")
        out.append(f"::: {{#tbl-group-{e}-thresholds}}\n{tables.markdown(tables.thresholds(c))}\n\n"
                   f"Thresholds of the group z map of *{text.md_escape(c.name)}* "
                   f"({'two-sided' if study.config.inference.two_sided else 'one-sided'}, "
                   f"{text.fmt_num(c.dof, 0)} degrees of freedom): the z cut-off each implies and the voxels and "
                   "clusters that survive, positive (+) and negative (\u2212).\n:::")
        out.append(f"::: {{#fig-group-{e}-thresholds}}\n{figure(study, figs.get(f'{c.name}.thresholds'))}\n\n"
                   f"The group map of *{text.md_escape(c.name)}* at every threshold (glass brains).\n:::")
        out.append(f"### Clusters {{#sec-group-{e}-clusters}}")
        out.append(f"::: {{#tbl-group-{e}-clusters}}\n{tables.markdown(_drop_empty(tables.clusters(c)))}\n\n"
                   f"{_clusters_caption(c)}\n:::")
        if c.permutation is not None:
            out.append(f"### Permutation test {{#sec-group-{e}-permutation}}")
            perm = c.permutation
            kind = "sign flips" if len(study.design.columns) == 1 else "permutations"
            out.append(f"::: {{#tbl-group-{e}-permutation}}\n{tables.markdown(permutation_table(c))}\n\n"
                       f"Non-parametric inference on *{text.md_escape(c.name)}*: {perm.n_perm:,} {kind} of "
                       f"{perm.n_distinct:,} possible (smallest attainable p {text.fmt_num(perm.min_p, 4)}), "
                       f"{'two-sided' if perm.two_sided else 'one-sided'}.\n:::")
    out.append("## The Default Mode Network across subjects {#sec-group-dmn}")
    out.append(study.dmn_text())
    return "\n\n".join(out)


def reason_text(study, reason: str) -> str:
    """A one-line reason as the report shows it: paths inside the BIDS dataset relative to its root."""
    root = str(Path(study.config.bids.root)).rstrip("/") + "/"
    return reason.replace(root, "") if root != "/" else reason


def _drop_empty(table: pd.DataFrame) -> pd.DataFrame:
    """Columns that hold only ``n/a`` (the random-field values a group or subject map does not have) left out."""
    keep = [c for c in table.columns if not (table[c].astype(str) == "n/a").all()]
    return table[keep]


def _fd(v: float) -> str:
    return text.fmt_num(v, 3) if math.isfinite(v) else "n/a"


def _tsnr(v: float) -> str:
    return text.fmt_num(v, 1) if math.isfinite(v) else "n/a"


def _calibration_cell(calibration: tuple[RunCalibration, ...], runs) -> str:
    used = {r.run or "1" for r in runs if r.ok}
    verdicts = [c for c in calibration if c.run in used]
    if not verdicts:
        return NOT_COMPUTED
    distinct = {c.verdict for c in verdicts}
    if len(distinct) == 1:
        v = verdicts[0].verdict
        return v if len(verdicts) == 1 or v == NOT_COMPUTED else f"{v} (every run)"
    return "; ".join(f"run {c.run}: {c.verdict}" for c in verdicts)


def _page_link(subject: str, links_from: str | None) -> str:
    if links_from is None:
        return f"sub-{subject}"
    href = os.path.relpath(PAGES_DIR / f"sub-{subject}.md", links_from).replace(os.sep, "/")
    return text.md(f"[sub-{text.md_escape(subject)}]({href})")


def subject_table(study, report: StudyReport | None = None, links_from: str | None = str(STUDY_CHAPTERS)):
    """One row per subject: runs used / found, motion, tSNR, calibration verdict, exclusions with their reasons.

    ``links_from``: the folder of the page that shows it (subject names link to their pages); None: plain names.
    """
    report = report if report is not None else load_report(study)
    numbers = study.subject_table()
    rows = []
    for s, (_, n) in zip(study.subjects, numbers.iterrows()):
        summary = report.subjects.get(s.subject) if report is not None else None
        cal = _calibration_cell(summary.calibration, s.runs) if summary is not None else NOT_COMPUTED
        reasons = reason_text(study, s.reason) if not s.included else "; ".join(
            f"run {k} left out: {reason_text(study, v)}" for k, v in s.runs_left_out.items())
        rows.append({"Subject": _page_link(s.subject, links_from),
                     "Group analysis": "included" if s.included else "left out",
                     "Runs used / found": f"{s.n_runs_used} / {s.n_runs}",
                     "Mean FD (mm)": _fd(n["mean FD (mm)"]), "Max FD (mm)": _fd(n["max FD (mm)"]),
                     "tSNR": _tsnr(n["tSNR"]), "Calibration": cal, "Exclusions (reasons)": reasons or "none"})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class PrefaceFacts:
    """The home page's formatted values (the page prints them; it never computes or rounds)."""

    task: str
    contrast: str
    n_subjects: str  # in the group
    n_total: str
    n_runs: str
    dataset: str
    primary_label: str
    primary_text: str
    primary_pos: str
    primary_neg: str
    group_contrast: str
    simulated: bool


def _dataset_name(study) -> tuple[str, bool]:
    root = Path(study.config.bids.root)
    name = "a BIDS dataset"
    try:
        name = json.loads((root / "dataset_description.json").read_text(encoding="utf-8")).get("Name") or name
    except (OSError, ValueError, AttributeError):
        pass
    return str(name), (root / "truth.json").is_file()


def preface_facts(study) -> PrefaceFacts:
    c = study.contrast()
    p = c.primary
    name, simulated = _dataset_name(study)
    return PrefaceFacts(task=study.task, contrast=study.first_level_contrast, n_subjects=str(study.n_subjects),
                        n_total=str(len(study.subjects)), n_runs=str(sum(s.n_runs for s in study.subjects)),
                        dataset=name, primary_label=p.label, primary_text=p.threshold_text,
                        primary_pos=text.fmt_k(p.n_pos), primary_neg=text.fmt_k(p.n_neg), group_contrast=c.name,
                        simulated=simulated)


def simulated_callout(study) -> str:
    """A callout saying plainly that the study is simulated (empty otherwise)."""
    if not preface_facts(study).simulated:
        return ""
    return ("::: {.callout-warning}\n## Simulated data\n\n"
            "Every number, map and table in this report comes from a **simulated study** "
            "(`fmri-report study --dataset simulated-study` or the tests), not from real scans: each subject's "
            "runs have a planted auditory response, a planted Default Mode deactivation and simulated head "
            "motion, so the report can be checked against the known truth.\n:::\n")


# ----------------------------------------------------------------------------- one page per subject

def _runs_table(study, subject, summary: SubjectSummary | None) -> pd.DataFrame:
    cal = {c.run: c for c in summary.calibration} if summary is not None else {}
    rows = []
    for r in subject.runs:
        label = r.run or "1"
        c = cal.get(label)
        verdict = NOT_COMPUTED if c is None else c.verdict + (
            f" (null SD {text.fmt_z(c.null_sd)})" if math.isfinite(c.null_sd) else "")
        rows.append({"Run": label, "Used": "yes" if r.ok else "no",
                     "Scans": str(r.n_scans) if r.ok else "", "tSNR": _tsnr(r.tsnr) if r.ok else "",
                     "Mean FD (mm)": _fd(r.mean_fd) if r.ok else "", "Max FD (mm)": _fd(r.max_fd) if r.ok else "",
                     "Peak z of the run": text.fmt_z(r.z_max) if r.ok and math.isfinite(r.z_max) else "",
                     "Calibration": verdict if r.ok else "", "Why left out": reason_text(study, r.reason)})
    return pd.DataFrame(rows)


class _PeakView:
    """The attributes :func:`analysis.tables.clusters` reads (``clusters``, ``primary.label``)."""

    def __init__(self, clusters, threshold):
        self.clusters, self.primary = clusters, threshold


def _downloads(study, subject, here: str) -> str:
    from urllib.parse import quote

    roles = (("effect", "effect size"), ("variance", "variance"), ("z", "z"))
    items = []
    for role, what in roles:
        rel = subject.files.get(role)
        if not rel or not study.path(rel).is_file():
            continue
        path = study.path(rel)
        sidecar = path.with_name(path.name.replace(".nii.gz", ".json"))
        link = quote(os.path.relpath(path, here).replace(os.sep, "/"))
        cell = f"[{text.md_escape(path.name)}]({link})"
        if sidecar.is_file():
            cell += f" ([JSON sidecar]({quote(os.path.relpath(sidecar, here).replace(os.sep, '/'))}))"
        items.append(f"- Fixed-effects {what} map: {cell}")
    return "\n".join(items)


def _peak(summary: SubjectSummary | None) -> dict | None:
    """The highest positive peak of a subject's cluster table (z, coordinates, label) for the page's prose."""
    if summary is None or summary.clusters is None or summary.clusters.empty:
        return None
    t = summary.clusters
    main = t[t["Cluster ID"].astype(str).str.isdigit() & (t["Sign"] == "+")]
    if main.empty:
        return None
    row = main.loc[main["Peak Stat"].astype(float).idxmax()]
    label = row.get("Label") if isinstance(row.get("Label"), str) else ""
    return {"z": float(row["Peak Stat"]), "xyz": (row["X"], row["Y"], row["Z"]),
            "label": text.fmt_label(label, row.get("Label distance (mm)")) if label else ""}


def subject_page(study, subject, report: StudyReport | None, project: str | Path = ".") -> str:
    """The Markdown page of one subject (``chapters/study/subjects/sub-<label>.md``)."""
    from . import tables

    project = Path(project)
    here = str((project / PAGES_DIR).resolve())
    summary = report.subjects.get(subject.subject) if report is not None else None
    sub = subject.subject
    out = [f"# sub-{text.md_escape(sub)} {{#sec-sub-{sub}}}",
           text.render("study_subject.md.j2", x=subject, s=study, summary=summary,
                       reason=reason_text(study, subject.reason),
                       left=[(k, reason_text(study, v)) for k, v in subject.runs_left_out.items()],
                       peak=_peak(summary))]
    refs = [f"@tbl-sub-{sub}-runs lists its runs"]
    if subject.included:
        refs.append(f"@fig-sub-{sub}-z shows its fixed-effects map")
        if summary is not None and summary.threshold is not None:
            refs.append(f"@tbl-sub-{sub}-clusters its peaks")
    out.append(text.fmt_list(refs) + ".")
    out.append(f"## Runs {{#sec-sub-{sub}-runs}}")
    out.append(f"::: {{#tbl-sub-{sub}-runs}}\n{tables.markdown(_runs_table(study, subject, summary))}\n\n"
               f"Runs of sub-{text.md_escape(sub)}: scans, median temporal SNR in the analysis mask, framewise "
               "displacement, the run's peak z of *"
               f"{text.md_escape(study.first_level_contrast)}*, the calibration verdict of its saved results and why "
               "a run was left out.\n:::")
    if subject.included:
        thr = summary.threshold if summary is not None else None
        out.append(f"## Fixed-effects map {{#sec-sub-{sub}-map}}")
        fig = figure(study, (summary.figures.get("z") if summary is not None else None), here=here)
        shown = (f"voxels beyond the z cut-off of {text.md_escape(thr.label)} ({text.md_escape(thr.threshold_text)})"
                 if thr is not None and thr.has_cutoff else "unthresholded (no voxel can pass its threshold)")
        out.append(f"::: {{#fig-sub-{sub}-z}}\n{fig}\n\n"
                   f"Fixed-effects z map of sub-{text.md_escape(sub)} (*{text.md_escape(study.first_level_contrast)}*, "
                   f"{subject.n_runs_used} run{'s' if subject.n_runs_used != 1 else ''}) on the MNI152 template: "
                   f"{shown}" + (", cut through the highest peak" if _top_peak(summary.clusters) else "")
                   + ".\n:::")
        if thr is not None:
            out.append(f"## Peaks {{#sec-sub-{sub}-peaks}}")
            out.append(f"::: {{#tbl-sub-{sub}-clusters}}\n"
                       f"{tables.markdown(_drop_empty(tables.clusters(_PeakView(summary.clusters, thr))))}\n\n"
                       f"Clusters of sub-{text.md_escape(sub)}'s fixed-effects z map at {text.md_escape(thr.label)} "
                       f"({text.md_escape(thr.threshold_text)}): peaks and sub-peaks.\n:::")
        downloads = _downloads(study, subject, here)
        if downloads:
            out.append(f"## Downloads {{#sec-sub-{sub}-downloads}}")
            out.append(downloads)
    return "\n\n".join(out) + "\n"


def write_pages(study, report: StudyReport | None, project: str | Path = ".") -> list[Path]:
    """Write every subject's page (only those whose text changed) and remove the pages of subjects no longer there.

    Returns the pages, relative to ``project``, in subject order.
    """

    project = Path(project)
    folder = project / PAGES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    pages = []
    for s in study.subjects:
        rel = PAGES_DIR / f"sub-{s.subject}.md"
        body = subject_page(study, s, report, project)
        write_file(project / rel, body)
        pages.append(rel)
    return pages


def _remove_stale_pages(pages: list[Path], project: Path) -> None:
    keep = {p.name for p in pages}
    for path in (project / PAGES_DIR).glob("sub-*.md"):
        if path.name not in keep:
            path.unlink()


def chapter_list(pages: list[Path], project: str | Path = ".") -> list:
    """``book.chapters``: the profile's chapters with the subject pages as a part after the last study chapter."""
    import yaml

    profile = yaml.safe_load((Path(project) / PROFILE_FILE).read_text(encoding="utf-8"))
    chapters = list(profile["book"]["chapters"])
    last = max(i for i, c in enumerate(chapters) if isinstance(c, str) and c.startswith(STUDY_CHAPTERS.as_posix()))
    part = {"part": "Subjects", "chapters": [p.as_posix() for p in pages]}
    return chapters[:last + 1] + [part]


def write_book_metadata(study, pages: list[Path], project: str | Path = ".") -> Path:
    """``_report-metadata.yml`` for the study book: title page (from the study and ``[report]``) and chapter list."""
    import yaml

    from .metadata import METADATA_FILE, from_toml, to_quarto

    project = Path(project)
    facts = preface_facts(study)
    meta = from_toml()
    meta = meta.model_copy(update={
        "title": f"{facts.task.capitalize()} task: a group fMRI study report",
        "abstract": (f"A group analysis of task {facts.task} in {facts.n_subjects} subjects ({facts.dataset}): "
                     "every run through the single-run model, fixed effects across each subject's runs, then a "
                     "second-level model with parametric and permutation inference; every number in the text is "
                     "computed from the saved results.")})
    data = to_quarto(meta, simulated=facts.simulated,
                     subtitle=f"{facts.n_subjects} of {facts.n_total} subjects in the group, {facts.n_runs} runs")
    data["book"]["chapters"] = chapter_list(pages, project)
    path = project / METADATA_FILE
    body = ("# Generated by `python -m analysis.study_report --prerender` (the study profile's pre-render step) from "
            "the saved study\n# and the [report] table of the config; edit those, not this file.\n"
            + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(body, encoding="utf-8")
    tmp.replace(path)
    return path


# ----------------------------------------------------------------------------- the pre-render hook

def write_study_parts(study, report: StudyReport | None, project: str | Path = ".") -> list[Path]:
    """What the study book's chapters include (``_parts/study/<part>.md``) and cite (``r.study.<value>`` in
    ``_parts/values.yml``): the chapters execute no code (:mod:`analysis.pages`)."""
    from dataclasses import asdict

    from . import report as single_run_report
    from . import tables
    from .pages import PARTS_DIR, write_values

    project = Path(project)
    parts = {"simulated": simulated_callout(study), "keywords": single_run_report.keywords_line(),
             "methods": methods_text(study), "results": results_section(study, report),
             "tbl-study-subjects": tables.markdown(subject_table(study, report, links_from="."))}
    written = []
    for name, body in parts.items():
        path = project / PARTS_DIR / "study" / f"{name}.md"
        write_file(path, body.rstrip("\n") + "\n")
        written.append(path)
    facts = {k: str(text.md_value(v)) for k, v in asdict(preface_facts(study)).items() if not isinstance(v, bool)}
    written.append(write_values({"study": facts}, project))
    return written


def prerender(config=None, project: str | Path = ".") -> str:
    """Everything the study book needs before Quarto renders it; returns a one-line summary."""
    study = load(config)
    report = prepare(study)
    pages = write_pages(study, report, project)
    write_book_metadata(study, pages, project)
    _remove_stale_pages(pages, Path(project))  # after the chapter list no longer names them
    from .provenance import write_provenance

    write_study_parts(study, report, project)  # (Quarto runs the hook in the project folder: links from there)
    write_provenance(project)
    c = study.contrast()
    return (f"study report: {study.n_subjects} of {len(study.subjects)} subjects, {len(pages)} subject pages; group "
            f"contrast {c.name}: {c.primary.label}: {c.primary.n_pos} positive / {c.primary.n_neg} negative voxels")


def _quiet_library_warnings() -> None:
    """nilearn's and matplotlib's warnings (an empty map, no negative cluster) stay out of the render log.

    What the reader needs (nothing survived, a run left out) the report says in its own words; the drawing
    processes inherit the setting through ``PYTHONWARNINGS``.
    """
    import warnings

    warnings.simplefilter("ignore")
    os.environ["PYTHONWARNINGS"] = "ignore"


def main(argv: list[str] | None = None) -> int:
    """``python -m analysis.study_report [--prerender] [--config F]``: the report step (and the book's pages)."""
    parser = argparse.ArgumentParser(prog="python -m analysis.study_report",
                                     description="Draw the study report's figures from the saved study; with "
                                                 "--prerender also write the subject pages and the chapter list.")
    parser.add_argument("--config", "-c", default=None, help="TOML config (default: $ANALYSIS_CONFIG or analysis.toml)")
    parser.add_argument("--prerender", action="store_true", help="Quarto pre-render hook of the study profile")
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    _quiet_library_warnings()
    from .config import ConfigError

    try:
        if args.prerender:
            print(prerender(args.config))
        else:
            study = load(args.config)
            report = prepare(study)
            print(f"study report step: {len(report.figures)} group figures, "
                  f"{sum(len(s.figures) for s in report.subjects.values())} subject figures in "
                  f"{study.path(str(REPORT_DIR))}")
    except (ConfigError, ValueError, OSError) as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
