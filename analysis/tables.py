"""Display tables: results objects -> formatted DataFrames / Markdown. Formatting only, no statistics."""

from __future__ import annotations

import math

import pandas as pd

from . import text
from .results import ContrastResult, DatasetInfo, Results

__all__ = ["dataset_summary", "events", "thresholds", "clusters", "markdown", "show"]


def markdown(df: pd.DataFrame, index: bool = False) -> str:
    """Pipe-table Markdown (renders in HTML, typst PDF and Word)."""
    df = df.map(lambda v: v.replace("|", "\\|") if isinstance(v, str) else v)
    df.columns = [str(c).replace("|", "\\|") for c in df.columns]
    return df.to_markdown(index=index, tablefmt="pipe", disable_numparse=True)


def show(df: pd.DataFrame, index: bool = False):
    """Display a table in a Quarto/Jupyter cell as Markdown (not as an HTML-only widget)."""
    from IPython.display import Markdown

    return Markdown(markdown(df, index=index))


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
                     "z cut-off": t.threshold_text,
                     "Voxels +": f"{t.n_pos:,}", "Clusters +": f"{t.n_pos_clusters:,}",
                     "Voxels \u2212": f"{t.n_neg:,}", "Clusters \u2212": f"{t.n_neg_clusters:,}"})
    return pd.DataFrame(rows)


def clusters(c: ContrastResult, sign: str | None = None, max_rows: int | None = None) -> pd.DataFrame:
    """The cluster table formatted for display; sub-peaks indented, empty table gets one explanatory row."""
    t = c.clusters
    if sign is not None:
        t = t[t["Sign"] == ("+" if sign == "+" else "\u2212")]
    if t.empty:
        return pd.DataFrame([{"Cluster": "\u2014", "Peak (x, y, z) mm": "no voxel survived " + c.primary.label,
                              "z": "", "p": "", "Size (voxels)": "", "Size (mm\u00b3)": ""}])
    out = pd.DataFrame({
        "Cluster": t["Cluster ID"].astype(str).map(lambda s: s if s.isdigit() else f"\u2003{s}"),
        "Peak (x, y, z) mm": [text.fmt_mni(xyz).replace(" mm", "") for xyz in t[["X", "Y", "Z"]].to_numpy()],
        "z": t["Peak Stat"].map(text.fmt_z),
        "p": t["Peak p"].map(text.fmt_p_cell),
        "Size (voxels)": t["Cluster Size (voxels)"].map(_int_or_blank),
        "Size (mm\u00b3)": t["Cluster Size (mm3)"].map(_int_or_blank),
    })
    if "Label" in t.columns:
        out["Harvard-Oxford label"] = t["Label"].fillna("").astype(str)
    if "Top Region" in t.columns:
        out["Largest share of cluster"] = [
            f"{r} ({text.fmt_pct(sh, 0)})" if isinstance(r, str) and r and sh == sh else ""
            for r, sh in zip(t["Top Region"], pd.to_numeric(t["Top Region Share"], errors="coerce"))]
    if max_rows is not None:
        out = out.head(max_rows)
    return out.reset_index(drop=True)


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


def dmn_networks(d) -> pd.DataFrame:
    """Network-level tests: the DMN (Yeo), the Default parcels (Schaefer) and the auditory control."""
    rows = []
    for label, nt in (("DMN (Yeo 2011, network 7)", d.network), ("DMN (Schaefer 2018 Default parcels)",
                                                                  d.network_schaefer),
                      ("Auditory control (Seitzman 2018)", d.control_network)):
        if nt is None:
            continue
        rows.append({"Network": label, "Voxels": f"{nt.n_voxels:,}",
                     "Effect (% signal)": text.fmt_num(nt.effect, 3),
                     "95 % CI": f"{text.fmt_num(nt.ci_low, 3)} to {text.fmt_num(nt.ci_high, 3)}",
                     f"t({nt.dof:g})": text.fmt_z(nt.t), "p": text.fmt_p_cell(nt.p)})
    return pd.DataFrame(rows)


def dmn_nodes(d, only_significant: bool = False) -> pd.DataFrame:
    """DMN node table (Seitzman 2018 DefaultMode spheres), optionally only FDR-significant nodes."""
    t = d.nodes_table
    if t is None or t.empty:
        return pd.DataFrame([{"Node": "\u2014", "Label": "no DMN nodes were analysed"}])
    if only_significant:
        t = t[t["q"] < d.alpha]
        if t.empty:
            return pd.DataFrame([{"Node": "\u2014", "Label": f"no node passed FDR q < {d.alpha:g}"}])
    t = t.sort_values("p")
    return pd.DataFrame({
        "Node": t["ROI"], "Peak (x, y, z) mm": [text.fmt_mni(v).replace(" mm", "") for v in t[["X", "Y", "Z"]].to_numpy()],
        "Label": t["Label"], "Effect (%)": t["Effect"].map(lambda v: text.fmt_num(v, 2)),
        "95 % CI": [f"{text.fmt_num(a, 2)} to {text.fmt_num(b, 2)}" for a, b in zip(t["CI Low"], t["CI High"])],
        "t": t["t"].map(text.fmt_z), "q (FDR)": t["q"].map(text.fmt_p_cell),
    }).reset_index(drop=True)


def atlas_comparison(d) -> pd.DataFrame:
    """Atlases considered for the DMN, filled in from this run's fetch attempts."""
    t = d.atlas_table
    return pd.DataFrame({"Atlas": t["Atlas"], "Type": t["Type"], "Resolution": t["Resolution"],
                         "Regions": t["Regions"], "Networks": t["Networks"],
                         "Loaded in this run": [s if s == "loaded" else s.replace("not available: ", "no: ")
                                                for s in t["Status"]],
                         "Reference": t["Citation"]})


def motion_summary(pre: dict) -> pd.DataFrame:
    """Mean and maximum framewise displacement, high-motion volumes, largest excursions."""
    q = pre["context"]
    rows = [("Mean framewise displacement", f"{text.fmt_num(q['mean_fd'], 3)} mm"),
            ("Maximum framewise displacement", f"{text.fmt_num(q['max_fd'], 3)} mm"),
            (f"Volumes above {q['fd_threshold']:g} mm", f"{q['n_above']} of {q['n_volumes']} "
                                                      f"({text.fmt_pct(q['fraction_above'])})"),
            ("Largest translation", f"{text.fmt_num(q['max_abs_translation_mm'], 2)} mm"),
            ("Largest rotation", f"{text.fmt_num(q['max_abs_rotation_deg'], 2)}\u00b0"),
            ("Motion regressors in the GLM", str(q["motion_regressors"]))]
    return pd.DataFrame(rows, columns=["Measure", "Value"])
