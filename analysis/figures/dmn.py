"""Default Mode Network figures: one function per figure, ``plot_*(..., out_file) -> Path``; drawing only."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import MNI_BACKGROUND
from ._base import background, glass_brain_outlines, save_figure

__all__ = ["plot_dmn_map", "plot_dmn_nodes", "plot_z_with_dmn_contours", "plot_roi_effects", "plot_seed_map"]

DMN_COLOR = "#cd3e4e"  # Yeo 2011 LUT colour of network 7 (Default)
CONTROL_COLOR = "#4682b4"
SCHAEFER_COLOR = "#e69422"
CUT_COORDS = (0, -53, 26)


def plot_dmn_map(dmn_mask_img, out_file, *, schaefer_mask_img=None, bg_img=MNI_BACKGROUND,
                 cut_coords=CUT_COORDS, title: str | None = None) -> Path:
    """The DMN mask (Yeo network 7) on the MNI template; Schaefer's Default parcels as a contour if given."""
    from nilearn import plotting

    fig = plt.figure(figsize=(8, 3))
    display = plotting.plot_roi(dmn_mask_img, bg_img=background(bg_img), cut_coords=cut_coords, display_mode="ortho",
                                cmap=_single_cmap(DMN_COLOR), alpha=0.7, figure=fig, title=title,
                                draw_cross=False, black_bg=False)
    if schaefer_mask_img is not None:
        display.add_contours(schaefer_mask_img, levels=[0.5], colors=[SCHAEFER_COLOR], linewidths=1.0)
    return save_figure(fig, out_file)


def _single_cmap(color):
    from matplotlib.colors import ListedColormap

    return ListedColormap([color])


def plot_dmn_nodes(nodes: pd.DataFrame, out_file, *, control: pd.DataFrame | None = None, node_size: float = 30,
                   title: str | None = None) -> Path:
    """DMN nodes (and the auditory control nodes) on a glass brain; coordinates from ``X``, ``Y``, ``Z``."""
    from nilearn import plotting

    fig = plt.figure(figsize=(8, 3))
    with glass_brain_outlines():
        display = plotting.plot_glass_brain(None, display_mode="lzry", figure=fig, title=title, black_bg=False)
    display.add_markers(nodes[["X", "Y", "Z"]].to_numpy(dtype=float), marker_color=DMN_COLOR,
                        marker_size=node_size)
    if control is not None and len(control):
        display.add_markers(control[["X", "Y", "Z"]].to_numpy(dtype=float), marker_color=CONTROL_COLOR,
                            marker_size=node_size)
    return save_figure(fig, out_file)


def plot_z_with_dmn_contours(z_img, dmn_mask_img, out_file, *, threshold: float, bg_img=MNI_BACKGROUND,
                             cut_coords=CUT_COORDS, title: str | None = None) -> Path:
    """The subject's z map (|z| > ``threshold``, the cut-off actually used) with the DMN outline."""
    from nilearn import plotting

    fig = plt.figure(figsize=(8, 3))
    display = plotting.plot_stat_map(z_img, bg_img=background(bg_img), threshold=abs(float(threshold)),
                                     cut_coords=cut_coords, display_mode="ortho", figure=fig, title=title,
                                     draw_cross=False, black_bg=False, cmap="RdBu_r")
    display.add_contours(dmn_mask_img, levels=[0.5], colors=["k"], linewidths=1.2)
    return save_figure(fig, out_file)


def plot_roi_effects(nodes_table: pd.DataFrame, out_file, *, control_table: pd.DataFrame | None = None,
                     network=None, control_network=None, alpha: float = 0.05, label_col: str = "ROI",
                     control_name: str = "control") -> Path:
    """Dot plot of the effect (with 95 % CI) per DMN node, the positive-control network and the network means.

    Tables have ``Effect``, ``CI Low``, ``CI High``, ``q`` and ``Unit`` columns (as :func:`analysis.dmn.roi_glm`
    returns); ``network`` / ``control_network`` are :class:`analysis.dmn.NetworkTest` objects drawn as
    diamonds. Filled markers: FDR q < ``alpha``.
    """
    parts = [("DMN", nodes_table, DMN_COLOR)]
    if control_table is not None and len(control_table):
        parts.append((control_name, control_table, CONTROL_COLOR))
    # one entry per row, top down: (label, effect, CI low, CI high, colour, marker style), None for a half-row gap
    rows: list = []
    for name, summary, color in ((("DMN (network)", network, DMN_COLOR),
                                  (f"{control_name} (network)", control_network, CONTROL_COLOR))):
        if summary is not None:
            rows.append((name, summary.effect, summary.ci_low, summary.ci_high, color, "network"))
    for name, table, color in parts:
        table = table.sort_values("Effect")
        table = table[np.isfinite(table["Effect"].to_numpy(dtype=float))]
        if rows:
            rows.append(None)
        q = table["q"].to_numpy(dtype=float)
        for label, eff, lo, hi, qq in zip(table[label_col], table["Effect"].to_numpy(dtype=float),
                                          table["CI Low"].to_numpy(dtype=float),
                                          table["CI High"].to_numpy(dtype=float), q):
            rows.append((str(label), eff, lo, hi, color, "filled" if np.isfinite(qq) and qq < alpha else "open"))
    # at most 8 inches tall (with its caption it fits an A4 page of the PDF); more rows than fit at a readable size
    # (7 pt) go into a second column, side by side, on the same effect axis
    n_cols = 2 if len(rows) > 50 else 1
    per_col = -(-len(rows) // n_cols)
    height = min(8.0, max(3.0, 0.13 * per_col + 1.0))
    label_size = min(7.0, 0.75 * 72 * (height - 1.0) / max(per_col, 1))
    fig, axes = plt.subplots(1, n_cols, figsize=(6, height), sharex=True, squeeze=False)
    if n_cols > 1:
        fig.subplots_adjust(wspace=0.45)
    unit = str(nodes_table["Unit"].dropna().iloc[0]) if "Unit" in nodes_table and nodes_table["Unit"].notna().any() \
        else "effect"
    for ax, chunk in zip(axes[0], (rows[i * per_col:(i + 1) * per_col] for i in range(n_cols))):
        y, ticks, ticklabels, drawn = 0.0, [], [], {}
        for row in chunk:
            if row is None:
                y += 0.5
                continue
            label, eff, lo, hi, color, style = row
            drawn.setdefault((color, style), []).append((y, eff, lo, hi))
            ticks.append(y)
            ticklabels.append(label)
            y += 1
        for (color, style), pts in drawn.items():  # one errorbar call per colour and marker, not per node
            ys, eff, lo, hi = (np.asarray(v, dtype=float) for v in zip(*pts))
            kw = (dict(fmt="D", markersize=6, capsize=2) if style == "network" else
                  dict(fmt="o", markersize=3.5, elinewidth=0.8, mfc=color if style == "filled" else "white"))
            ax.errorbar(eff, ys, xerr=np.vstack([eff - lo, hi - eff]), color=color, **kw)
        ax.axvline(0, color="0.5", linewidth=0.8)
        ax.set_yticks(ticks)
        ax.set_yticklabels(ticklabels, fontsize=label_size)
        ax.set_ylim(per_col + 0.5, -1.0)  # the same row spacing in every column, top down
        ax.tick_params(axis="x", labelsize=8)
        ax.set_xlabel(f"Effect ({unit}), 95 % CI", fontsize=8)
        ax.spines[["top", "right"]].set_visible(False)
    return save_figure(fig, out_file)


def plot_seed_map(seed_z_img, out_file, *, threshold: float, seed=CUT_COORDS, dmn_mask_img=None,
                  bg_img=MNI_BACKGROUND, title: str | None = None) -> Path:
    """The seed-based z map, cut through the seed, with the DMN outline if given."""
    from nilearn import plotting

    fig = plt.figure(figsize=(8, 3))
    display = plotting.plot_stat_map(seed_z_img, bg_img=background(bg_img), threshold=abs(float(threshold)),
                                     cut_coords=tuple(seed), display_mode="ortho", figure=fig, title=title,
                                     draw_cross=False, black_bg=False, cmap="RdBu_r")
    display.add_markers([tuple(seed)], marker_color="lime", marker_size=40)
    if dmn_mask_img is not None:
        display.add_contours(dmn_mask_img, levels=[0.5], colors=["k"], linewidths=1.0)
    return save_figure(fig, out_file)
