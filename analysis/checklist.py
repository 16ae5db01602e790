"""COBIDAS-style reporting checklist for the first-level model, filled in from the results.

The items follow the design, acquisition, preprocessing, model, inference, results and sharing
sections of the COBIDAS report [@nichols2017], restricted to what a single-subject first-level GLM
can report. Each value is read from :class:`~analysis.results.Results` (the config plus what the
fitted model recorded); nothing is computed here. An item the results cannot fill is flagged
``missing`` so the gap is visible in the report instead of silently left out.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import text
from .results import Results

__all__ = ["checklist", "COLUMNS", "STATUSES", "REPORTED", "MISSING", "NOT_APPLICABLE", "summary", "display",
           "missing_callout"]

COLUMNS = ["Section", "Item", "Value", "Status"]
REPORTED, MISSING, NOT_APPLICABLE = "reported", "missing", "not applicable"
STATUSES = (REPORTED, MISSING, NOT_APPLICABLE)

_HEIGHT = {"fdr": "false discovery rate, Benjamini-Hochberg, voxel-wise",
           "bonferroni": "family-wise error rate, Bonferroni, voxel-wise",
           "fpr": None, None: None}
_HRF = {"spm": "canonical SPM HRF", "glover": "Glover HRF"}


def checklist(res: Results) -> pd.DataFrame:
    """The checklist as a DataFrame with columns Section, Item, Value, Status.

    Parameters
    ----------
    res : Results

    Returns
    -------
    pandas.DataFrame
        One row per item, in reporting order; ``Status`` is ``reported``, ``missing`` (flag: the
        item should be reported but the results do not hold it) or ``not applicable``.
    """
    rows: list[tuple[str, str, str, str]] = []

    def add(section: str, item: str, value: str | None, status: str | None = None) -> None:
        if status is None:
            status = REPORTED if value else MISSING
        rows.append((section, item, value or "not recorded", status))

    ds, m, cfg = res.dataset, res.model, res.config
    c = res.contrast()
    p = c.primary
    sim = ds.is_simulated

    # ---------------------------------------------------------------- design
    s = "Design"
    ev = ds.events
    counts = ev["trial_type"].value_counts().sort_index()
    durations = sorted({float(d) for d in ev["duration"]})
    kind = "block design" if min(durations) >= 10 else ("event-related design" if max(durations) <= 2
                                                         else "mixed block/event design")
    add(s, "Design type", f"{kind}; one run, one subject (first level)")
    add(s, "Conditions and baseline", f"{text.fmt_list(ds.conditions)}; rest is the implicit baseline")
    add(s, "Blocks or trials per condition",
        "; ".join(f"{name}: {n}" for name, n in counts.items()))
    add(s, "Block or trial duration", ", ".join(f"{d:g} s" for d in durations))
    add(s, "Run length", f"{ds.n_scans} scans \u00d7 {ds.t_r:g} s = {ds.run_length_s:g} s")
    add(s, "Source of the event timing", "events table supplied with the dataset" if not sim
        else "simulation parameters (events.tsv written with the simulated run)")

    # ---------------------------------------------------------------- acquisition
    s = "Acquisition"
    add(s, "Repetition time (TR)", f"{ds.t_r:g} s" + (f" (image header: {ds.t_r_header:g} s)" if ds.t_r_header
                                                      else " (not set in the image header)"))
    add(s, "Volumes analysed", str(ds.n_scans))
    add(s, "Voxel size", " \u00d7 ".join(text.fmt_num(v, 1) for v in ds.voxel_size) + " mm")
    add(s, "Image matrix", " \u00d7 ".join(str(v) for v in ds.shape[:3]))
    for item in ("Field strength and scanner", "Pulse sequence, echo time and flip angle", "Slice order"):
        add(s, item, "simulated data: no scanner" if sim else None, NOT_APPLICABLE if sim else MISSING)

    # ---------------------------------------------------------------- preprocessing
    s = "Preprocessing"
    pre = res.preprocessing
    ran = bool(pre and pre.ran and pre.context)
    q = pre.context if ran else None
    if ran:
        add(s, "Analysis space", f"{ds.space}: the T1w image normalised to the MNI152 template with ANTs "
            f"({q.normalisation}), the run resampled once onto the {q.target_resolution:g} mm grid")
    else:
        add(s, "Analysis space", ds.space + ("" if ds.space.startswith("MNI") else " (no spatial normalisation)"))
    if ran:
        add(s, "Motion correction", f"ANTs rigid realignment to the {q.realign_reference} volume; "
            f"framewise displacement mean {q.mean_fd:.3f} mm, max {q.max_fd:.3f} mm, "
            f"{q.n_above} volumes above {q.fd_threshold:g} mm")
    elif sim:
        add(s, "Motion correction", "simulated data: no head motion", NOT_APPLICABLE)
    else:
        add(s, "Motion correction", f"not run here ({pre.reason or 'no record'})" if pre else None, MISSING)
    add(s, "Slice-timing correction", "simulated data" if sim else "not performed",
        NOT_APPLICABLE if sim else MISSING)
    fwhm = float(q.smoothing_fwhm or 0.0) if ran else m.smoothing_fwhm
    add(s, "Spatial smoothing", f"Gaussian kernel, {fwhm:g} mm FWHM" + (" (after normalisation)" if ran else "")
        if fwhm else "none (0 mm FWHM)")
    add(s, "Intensity scaling", "each voxel's time series divided by its mean (effects in % signal change)"
        if m.signal_scaling == 0 and m.signal_scaling is not False else
        ("global scaling of all voxels" if m.signal_scaling == 1 else "none"))

    # ---------------------------------------------------------------- model
    s = "Model"
    add(s, "Software", text.md(f"nilearn {res.versions.get('nilearn', '?')} FirstLevelModel "
        f"[@abraham2014] (Python {res.versions.get('python', '?')})") if res.versions.get("nilearn") else None)
    add(s, "Haemodynamic response model", _HRF.get(m.hrf_model, m.hrf_model.replace("spm", "SPM HRF")))
    add(s, "Drift model and high-pass filter",
        f"{m.drift_model} ({m.n_drift} regressors), cut-off {m.high_pass:g} Hz "
        f"(period {1 / m.high_pass:g} s)" if m.drift_model == "cosine" and m.high_pass > 0 else
        f"{m.drift_model} ({m.n_drift} regressors)")
    add(s, "Serial correlations", _noise(m.noise_model))
    nuisance = [col for col in m.design_columns if col not in m.conditions and col != "constant"
                and not col.startswith(("drift", "cosine"))]
    add(s, "Nuisance regressors (motion, physiology)", ", ".join(nuisance) if nuisance else "none in the model",
        REPORTED)
    n_cond = len(m.conditions)
    add(s, "Design matrix", f"{m.n_regressors} columns: {n_cond} condition{'s' if n_cond != 1 else ''}, "
        f"{m.n_drift} drift, {len(nuisance)} nuisance and a constant")
    add(s, "Contrasts", "; ".join(f"{k} = {v.expression} ({_weights(m, k)})" for k, v in res.contrasts.items()))
    add(s, "Residual degrees of freedom", f"{m.dof:g}")
    add(s, "Analysis mask", f"{m.mask_source}; {m.n_mask_voxels:,} voxels")

    # ---------------------------------------------------------------- inference
    s = "Inference"
    spec = p.spec
    add(s, "Statistic", "z (the contrast's t statistic converted to z)")
    add(s, "One- or two-sided", "two-sided (both signs)" if spec.two_sided else "one-sided (positive only)")
    add(s, "Primary threshold", c.threshold_label)
    correction = _HEIGHT.get(spec.height_control)
    add(s, "Multiple-comparison correction", correction or
        ("none: the primary threshold is uncorrected" if spec.height_control in ("fpr", None) else spec.height_control),
        REPORTED if correction else MISSING)
    add(s, "Cluster-extent threshold",
        f"{spec.cluster_threshold} voxels (a size filter, not a cluster-level test)" if spec.cluster_threshold
        else "none", REPORTED)
    mm3 = m.n_mask_voxels * float(pd.Series(ds.voxel_size).prod())
    add(s, "Search volume", f"whole brain mask, {m.n_mask_voxels:,} voxels ({text.fmt_mm3(mm3)})")
    add(s, "Cluster connectivity", "face-connected voxels (6 neighbours), as nilearn's cluster table")
    add(s, "Other thresholds shown", "; ".join(t.label for t in c.thresholds if t.key != c.primary_key) or "none",
        REPORTED)

    # ---------------------------------------------------------------- results
    s = "Results"
    add(s, "Surviving voxels and clusters", f"{p.n_pos:,} voxels in {p.n_pos_clusters} clusters ({c.direction}); "
        f"{p.n_neg:,} voxels in {p.n_neg_clusters} clusters ({c.negative_direction})")
    add(s, "Peak table", f"{len(c.peaks())} clusters with peak coordinates, z, p and size; sub-peaks "
        f"\u2265 {cfg.inference.min_distance:g} mm apart")
    add(s, "Coordinate space", f"{ds.space} (world coordinates, mm)")
    atlases = [col for col in ("Harvard-Oxford cortical", "Harvard-Oxford subcortical") if col in c.clusters.columns]
    if atlases:
        add(s, "Anatomical labels of peaks", " and ".join(atlases) + " atlases (cortical label first), with each "
            "cluster's share per region")
    elif not ds.space.startswith("MNI"):
        add(s, "Anatomical labels of peaks", "scanner space: no atlas labels", NOT_APPLICABLE)
    else:
        add(s, "Anatomical labels of peaks", None, MISSING)
    add(s, "Range of the z map", f"{text.fmt_z(c.z_min)} to {text.fmt_z(c.z_max)}")
    units = "% signal change" if m.signal_scaling == 0 else "BOLD units"
    add(s, "Effect size", f"effect map of every contrast, in {units}" if "effect" in c.files else None)

    # ---------------------------------------------------------------- sharing
    s = "Data sharing"
    add(s, "Unthresholded z map", _file(res, c.files.get("z")))
    add(s, "Effect-size map", _file(res, c.files.get("effect")))
    add(s, "Thresholded map and cluster labels",
        ", ".join(filter(None, (_file(res, c.files.get(k)) for k in ("z_thresholded", "clusters_img")))) or None)
    add(s, "Cluster table", _file(res, c.files.get("clusters")))
    add(s, "Input data checksums", f"SHA-256 of {len(ds.files)} input files" if ds.files else None)
    add(s, "Software versions", ", ".join(f"{k} {v}" for k, v in sorted(res.versions.items())
                                         if k in ("nilearn", "nibabel", "numpy", "scipy", "python")) or None)
    return pd.DataFrame(rows, columns=COLUMNS)


def summary(table: pd.DataFrame) -> dict[str, int]:
    """Count of items per status (every status present, zero if none)."""
    counts = table["Status"].value_counts()
    return {st: int(counts.get(st, 0)) for st in STATUSES}


def display(table: pd.DataFrame) -> pd.DataFrame:
    """The checklist for display: the section named once per group, missing items in bold."""
    out = table.copy()
    out["Section"] = out["Section"].where(out["Section"].ne(out["Section"].shift()), "")
    out["Status"] = out["Status"].map(lambda st: text.md(f"**{st}**") if st == MISSING else st)
    return out


def missing_callout(table: pd.DataFrame) -> str:
    """A Quarto warning callout listing the missing items (empty string when nothing is missing)."""
    missing = table[table["Status"] == MISSING]
    if missing.empty:
        return ""
    items = "\n".join(f"- {text.md_escape(row.Section)}: {text.md_escape(row.Item)}" for row in missing.itertuples())
    return ("::: {.callout-warning}\n## Items to complete before publication\n\n"
            "The results do not record these items; report them in the text (or add them to the "
            f"analysis) before submitting:\n\n{items}\n:::\n")


def _noise(noise_model: str) -> str:
    """The noise model in words (with its citations), from ``analysis.noise`` when it describes it."""
    try:
        from .noise import NOISE_MODELS
    except ImportError:  # pragma: no cover - older package layout
        NOISE_MODELS = {}
    entry = NOISE_MODELS.get(noise_model)
    if entry is None:
        return noise_model
    return text.md(f"{text.md_escape(noise_model)}: {entry.cited_description}")  # holds @citations


def _weights(m, name: str) -> str:
    """Non-zero weights of a contrast on the design columns, e.g. ``listening: 1``."""
    try:
        row = m.contrast_matrix.loc[name]
    except (KeyError, AttributeError):
        return "weights not recorded"
    nonzero = [f"{col}: {float(w):g}" for col, w in row.items() if float(w) != 0]
    return "weights " + (", ".join(nonzero) if nonzero else "all zero")


def _file(res: Results, relative: str | None) -> str | None:
    """The file's name if the results recorded it and it exists on disk."""
    if not relative or not res.path(relative).exists():
        return None
    return Path(relative).name
