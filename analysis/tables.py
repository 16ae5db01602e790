"""Display tables: results objects -> formatted DataFrames / Markdown. Formatting only, no statistics."""

from __future__ import annotations

import math
import re

import pandas as pd

from . import text
from .results import ContrastResult, DatasetInfo, Results

__all__ = ["dataset_summary", "events", "thresholds", "clusters", "markdown"]


def markdown(df: pd.DataFrame, index: bool = False) -> str:
    """Pipe-table Markdown (renders in HTML, typst PDF and Word).

    Every cell and header is literal text (:func:`analysis.text.md_escape`) unless the package built it as
    Markdown with :func:`analysis.text.md` (a link, a citation); ``|`` never ends a cell.
    """
    def cell(v):
        if isinstance(v, str):
            return text.md_escape(v).replace("|", "\\|")
        return v

    df = df.map(cell)
    df.columns = [cell(str(c)) for c in df.columns]
    if index:
        df.index = [cell(str(i)) for i in df.index]
    body = df.to_markdown(index=index, tablefmt="pipe", disable_numparse=True)
    lines = body.split("\n")
    columns = ([df.index.name or ""] if index else []) + list(df.columns)
    cells = [list(map(str, df.index))] if index else []
    cells += [list(map(str, df[c])) for c in df.columns]
    lines[1] = "|" + "|".join(":" + "-" * (_width(h, col) - 1) for h, col in zip(columns, cells)) + "|"
    return "\n".join(lines)


def _width(header: str, cells: list[str], wrap_at: int = 18) -> int:
    """A column's share of a wide table, in characters, written as the dash count of its separator row (where a
    table keeps its widths, ``tbl-colwidths="true"``: the cluster tables in the PDF and Word).

    The longest unbreakable piece of the column (a word, or the part of one after a hyphen, of the header or of a
    cell) must fit; beyond that a column of long text gets at most ``wrap_at`` characters and wraps, so that the
    short numeric columns are not squeezed by a long label.
    """
    def shown(s: str) -> str:  # the text as printed; an escaped space is a no-break space, a span its text
        s = re.sub(r"^\[(.*)\]\{\.[\w-]+\}$", r"\1", s)
        return re.sub(r"\\(.)", r"\1", s.replace("\\ ", "\u00a0"))

    def longest_piece(s: str) -> int:
        return max((len(w) for w in re.split(r"(?<=-)|[ \t]+", shown(s)) if w), default=0)

    unbreakable = max([3, longest_piece(header), *(longest_piece(c) for c in cells)])
    longest = max([0, *(len(shown(c)) for c in cells)])
    return max(unbreakable, min(longest, wrap_at)) + 3  # and the cell's padding


def dataset_summary(ds: DatasetInfo) -> pd.DataFrame:
    """What the seed notebook inspected by hand: shape, volumes, voxel size, dtype, range, TR."""
    rows = [
        ("Dataset", ds.dataset + (" (simulated fallback)" if ds.fallback_reason else "")),
        ("Space", ds.space if ds.acquired_space in ("", ds.space)
         else f"{ds.acquired_space} as acquired; {ds.space} after preprocessing"),
        ("Image shape (x, y, z, t), as acquired", " \u00d7 ".join(str(s) for s in ds.shape)),
        ("Volumes analysed", str(ds.n_scans)),
        ("Voxel size (mm)", " \u00d7 ".join(text.fmt_num(v, 1) for v in ds.voxel_size)),
        ("Data type", ds.dtype),
        ("Value range", f"{text.fmt_num(ds.value_min, 1)} to {text.fmt_num(ds.value_max, 1)}"),
        ("TR (s)", f"{ds.t_r:g} (from {ds.t_r_source or 'the dataset'}; header: "
                   + (f"{ds.t_r_header:g})" if ds.t_r_header else "not set)")),
        ("Run length (s)", f"{ds.run_length_s:g}"),
        ("Conditions", ", ".join(ds.conditions)),
        ("Anatomical image", "yes" if ds.has_anat else "no"),
    ]
    return pd.DataFrame(rows, columns=["Property", "Value"])


def events(ds: DatasetInfo) -> pd.DataFrame:
    """The events table with onsets and durations in seconds and in scans."""
    ev = ds.events.copy()
    ev.insert(1, "onset (scan)", (ev["onset"] / ds.t_r).map(lambda v: f"{v:g}"))
    ev["onset"] = ev["onset"].map(lambda v: f"{v:g}")
    ev["duration"] = ev["duration"].map(lambda v: f"{v:g}")
    return ev.rename(columns={"onset": "onset (s)", "duration": "duration (s)"})


def thresholds(c: ContrastResult) -> pd.DataFrame:
    """The thresholds side by side: cut-off used, surviving voxels and clusters per sign."""
    rows = []
    for t in c.thresholds:
        rows.append({"Threshold": t.label + (" (primary)" if t.key == c.primary_key else ""),
                     "z cut-off": _cutoff(t.threshold_text),
                     "Voxels +": f"{t.n_pos:,}", "Clusters +": f"{t.n_pos_clusters:,}",
                     "Voxels \u2212": f"{t.n_neg:,}", "Clusters \u2212": f"{t.n_neg_clusters:,}"})
    return pd.DataFrame(rows)


def clusters(c: ContrastResult, sign: str | None = None, max_rows: int | None = None) -> pd.DataFrame:
    """The cluster table formatted for display; sub-peaks indented, empty table gets one explanatory row."""
    t = c.clusters
    if sign is not None:
        t = t[t["Sign"] == ("+" if sign == "+" else "\u2212")]
    if t.empty:
        return pd.DataFrame([{"Cluster": "\u2014", "Result": "no voxel survived " + c.primary.label}])
    out = pd.DataFrame({
        "Cluster": t["Cluster ID"].astype(str).map(lambda s: s if s.isdigit() else f"\u2003{s}"),
        "Peak (x, y, z) mm": [_coordinates(xyz) for xyz in t[["X", "Y", "Z"]].to_numpy()],
        "z": t["Peak Stat"].map(text.fmt_z),
        "Peak p(unc)": t["Peak p"].map(_p_cell),  # SPM's name: the peak voxel's uncorrected p
        # SPM's random-field and FDR columns ("n/a" when random-field inference was not available)
        "Peak p(FWE)": _p_column(t, "Peak p(FWE)"),
        "Peak q(FDR)": _p_column(t, "Peak q(FDR)"),
        "Size (voxels)": t["Cluster Size (voxels)"].map(_int_or_blank),
        "Size (mm\u00b3)": t["Cluster Size (mm3)"].map(_int_or_blank),
        "Cluster p(FWE)": _p_column(t, "Cluster p(FWE)"),
        "Cluster p(unc)": _p_column(t, "Cluster p(unc)"),
    })
    if "Label" in t.columns:
        dist = t["Label distance (mm)"] if "Label distance (mm)" in t.columns else [None] * len(t)
        out["Harvard-Oxford label"] = [text.fmt_label(lab, d) if isinstance(lab, str) else ""
                                       for lab, d in zip(t["Label"], dist)]
    if "Top Region" in t.columns:
        out["Largest share of cluster"] = [
            f"{r} ({text.fmt_pct(sh, 0)})" if isinstance(r, str) and r and sh == sh else ""
            for r, sh in zip(t["Top Region"], pd.to_numeric(t["Top Region Share"], errors="coerce"))]
    if max_rows is not None:
        out = out.head(max_rows)
    return out.reset_index(drop=True)


def _unbroken(value: str) -> text.Md:
    """A short value for a table cell (``|z| > 3.29``, a coordinate) that never wraps across lines in a narrow
    column: its spaces non-breaking (Markdown's escaped space) for the PDF and Word, and in a ``nowrap`` span for
    the HTML (``report.scss``), as browsers break after ``|`` even before a no-break space (Unicode line
    breaking: ``|`` allows a break after it)."""
    return text.md("[" + text.md_escape(value).replace(" ", "\\ ") + "]{.nowrap}")


def _cutoff(value: str) -> str:
    """A threshold's z cut-off for a table cell (``|z| > 3.29``, ``z > 3.10``) on one line; a longer text (no
    cut-off found) as it is, free to wrap."""
    return _unbroken(value) if value.startswith(("|z| ", "z ")) else value


def _p_cell(value: float) -> str:
    """A p-value for a table cell (``< .001``, ``.032``) on one line (:func:`_unbroken`)."""
    shown = text.fmt_p_cell(value)
    return _unbroken(shown) if " " in shown else shown


def _coordinates(xyz) -> text.Md:
    """``(x, y, z)`` in whole millimetres for a table cell, never wrapped (:func:`_unbroken`)."""
    return _unbroken(text.fmt_mni(xyz).replace(" mm", ""))


def _p_column(t: pd.DataFrame, column: str) -> list[str]:
    """A p/q column for display: blank where undefined (sub-peaks' cluster values), n/a when absent."""
    if column not in t.columns:
        return ["n/a"] * len(t)
    return ["" if v != v else _p_cell(v) for v in pd.to_numeric(t[column], errors="coerce")]


def _int_or_blank(v) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(v) else f"{int(round(v)):,}"


def contrast_weights(res: Results) -> pd.DataFrame:
    """Contrast weights over the condition columns (drifts and constant get weight 0 and are left out)."""
    cm = res.model.contrast_matrix
    cols = [c for c in cm.columns if c in res.model.conditions]
    out = cm[cols].map(lambda v: f"{v:g}").reset_index(names="Contrast")
    out.insert(1, "Expression", [res.contrasts[n].expression for n in out["Contrast"]])
    return out


def calibration(main, reference=None) -> pd.DataFrame:
    """Share of voxels beyond each |z| threshold: nominal, observed, null designs (and the reference model)."""
    rows = []
    for cal in [c for c in (main, reference) if c is not None]:
        for r in cal.rows:
            rows.append({"Noise model": cal.noise_model, "|z| >": text.fmt_z(r["threshold"]),
                         "Nominal": text.fmt_pct(r["nominal"], 2), "Observed": text.fmt_pct(r["observed"], 2),
                         "Null designs": "" if r["null"] != r["null"] else text.fmt_pct(r["null"], 2),
                         "Null / nominal": "" if r["null"] != r["null"] else f"{r['null_ratio']:.1f}\u00d7"})
        rows.append({"Noise model": cal.noise_model, "|z| >": "empirical-null SD",
                     "Nominal": "1.00", "Observed": text.fmt_z(cal.null_sd),
                     "Null designs": text.fmt_z(cal.null_design_null_sd) if cal.n_null else "",
                     "Null / nominal": "trustworthy" if cal.trustworthy else "NOT trustworthy"})
    return pd.DataFrame(rows)


def null_designs(cal) -> pd.DataFrame:
    """One row per null design: segment order, correlation with the real design and with each other null design."""
    rows = []
    for i, (order, r) in enumerate(zip(cal.null_orders, cal.null_corr)):
        row = {"Null design": str(i + 1), "Segment order": " ".join(str(j + 1) for j in order),
               "r with the real design": text.fmt_num(r, 2)}
        for j in range(len(cal.null_corr)):
            row[f"r with {j + 1}"] = "" if j == i else text.fmt_num(cal.null_pair_corr[i][j], 2)
        rows.append(row)
    return pd.DataFrame(rows)


def dmn_networks(d) -> pd.DataFrame:
    """Network-level tests: the DMN (Yeo), the Default parcels (Schaefer) and the positive-control network."""
    rows = []
    control = f"{d.control_name} network, positive control (Seitzman et al. 2020)" if d.control_name else ""
    for label, nt in (("DMN (Yeo 2011, network 7)", d.network), ("DMN (Schaefer 2018 Default parcels)",
                                                                  d.network_schaefer),
                      (control, d.control_network)):
        if nt is None:
            continue
        eff, lo, hi = text.fmt_signal([nt.effect, nt.ci_low, nt.ci_high], min_digits=3)
        rows.append({"Network": label, "Voxels": f"{nt.n_voxels:,}",
                     "Effect (% signal)": eff, "95 % CI": f"{lo} to {hi}",
                     f"t({nt.dof:g})": text.fmt_z(nt.t), "p": _p_cell(nt.p)})
    return pd.DataFrame(rows)


def dmn_overlaps(overlaps, c: ContrastResult) -> pd.DataFrame:
    """Overlap of each thresholded map of the results chapter (negative side) with the DMN.

    ``overlaps``: the :class:`analysis.dmn.ThresholdOverlap` of each threshold (``res.dmn.overlaps``).
    """
    rows = []
    for o in overlaps:
        rows.append({"Threshold": o.label + (" (primary)" if o.key == c.primary_key else ""),
                     "z cut-off": _cutoff(o.threshold_text),
                     f"Voxels with {c.negative_direction}": f"{o.n_below:,}",
                     "of them in the DMN": f"{o.n_overlap:,}",
                     "Share of the DMN": text.fmt_pct(o.share_dmn_below or 0.0)})
    return pd.DataFrame(rows)


def dmn_nodes(d, only_significant: bool = False) -> pd.DataFrame:
    """DMN node table (Seitzman et al. 2020 DefaultMode spheres), optionally only FDR-significant nodes."""
    t = d.nodes_table
    if t is None or t.empty:
        return pd.DataFrame([{"Node": "\u2014", "Label": "no DMN nodes were analysed"}])
    if only_significant:
        t = t[t["q"] < d.alpha]
        if t.empty:
            return pd.DataFrame([{"Node": "\u2014", "Label": f"no node passed FDR q < {d.alpha:g}"}])
    t = t.sort_values("p")
    dist = t["Label distance (mm)"] if "Label distance (mm)" in t.columns else [None] * len(t)
    cis = [text.fmt_signal([a, b]) for a, b in zip(t["CI Low"], t["CI High"])]
    return pd.DataFrame({
        "Node": t["ROI"], "Peak (x, y, z) mm": [_coordinates(v) for v in t[["X", "Y", "Z"]].to_numpy()],
        "Label": [text.fmt_label(lab, dd) for lab, dd in zip(t["Label"], dist)],
        "Effect (%)": t["Effect"].map(lambda v: text.fmt_num(v, 2)),
        "95 % CI": [f"{a} to {b}" for a, b in cis],
        "t": t["t"].map(text.fmt_z), "q (FDR)": t["q"].map(_p_cell),
    }).reset_index(drop=True)


def atlas_comparison(d) -> pd.DataFrame:
    """Atlases considered for the DMN, filled in from this run's fetch attempts."""
    t = d.atlas_table
    return pd.DataFrame({"Atlas": t["Atlas"], "Type": t["Type"], "Resolution": t["Resolution"],
                         "Regions": t["Regions"], "Networks": t["Networks"],
                         "Loaded in this run": [s if s == "loaded" else s.replace("not available: ", "no: ")
                                                for s in t["Status"]],
                         "Reference": [text.md(c) for c in t["Citation"]]})  # pandoc @citekeys


def motion_summary(pre) -> pd.DataFrame:
    """Mean and maximum framewise displacement, high-motion volumes, largest excursions.

    ``pre``: the run's :class:`analysis.results.Preprocessing` record (it ran).
    """
    q = pre.context
    rows = [("Mean framewise displacement", f"{text.fmt_num(q.mean_fd, 3)} mm"),
            ("Maximum framewise displacement", f"{text.fmt_num(q.max_fd, 3)} mm"),
            (f"Volumes above {q.fd_threshold:g} mm", f"{q.n_above} of {q.n_volumes} "
                                                   f"({text.fmt_pct(q.fraction_above)})"),
            ("Largest translation", f"{text.fmt_num(q.max_abs_translation_mm, 2)} mm"),
            ("Largest rotation", f"{text.fmt_num(q.max_abs_rotation_deg, 2)}\u00b0"),
            ("Motion regressors in the GLM", str(q.motion_regressors))]
    return pd.DataFrame(rows, columns=["Measure", "Value"])
