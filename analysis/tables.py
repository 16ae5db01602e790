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
        ("Space", ds.space),
        ("Image shape (x, y, z, t)", " \u00d7 ".join(str(s) for s in ds.shape)),
        ("Volumes analysed", str(ds.n_scans)),
        ("Voxel size (mm)", " \u00d7 ".join(text.fmt_num(v, 1) for v in ds.voxel_size)),
        ("Data type", ds.dtype),
        ("Value range", f"{text.fmt_num(ds.value_min, 1)} to {text.fmt_num(ds.value_max, 1)}"),
        ("TR (s), config / header", f"{ds.t_r:g} / {ds.t_r_header:g}" if ds.t_r_header else f"{ds.t_r:g} / not set"),
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
        "p": t["Peak p"].map(lambda p: text.fmt_p(p).replace("p ", "")),
        "Size (voxels)": t["Cluster Size (voxels)"].map(_int_or_blank),
        "Size (mm\u00b3)": t["Cluster Size (mm3)"].map(_int_or_blank),
    })
    for col in [c_ for c_ in t.columns if c_.startswith("Label")]:
        out[col.replace("Label: ", "")] = t[col].fillna("")
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
