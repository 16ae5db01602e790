"""Figures of the design and the statistical maps. Each function draws one figure and returns its path."""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from nilearn import plotting

from . import MNI_BACKGROUND
from ._base import background, glass_brain_outlines, save_figure

__all__ = ["plot_design", "plot_contrasts", "plot_map", "plot_glass", "plot_threshold_panel", "plot_volumes",
           "plot_image", "plot_viewer"]


def plot_design(design: pd.DataFrame, out_file) -> Path:
    """The design matrix (scans x regressors)."""
    fig, ax = plt.subplots(figsize=(6, 5))
    plotting.plot_design_matrix(design, axes=ax)
    ax.set_ylabel("scan")
    return save_figure(fig, out_file)


def plot_contrasts(contrast_matrix: pd.DataFrame, design: pd.DataFrame, out_file) -> Path:
    """Weights of each contrast over the design columns."""
    fig, axes = plt.subplots(len(contrast_matrix), 1, figsize=(6, 0.9 + 0.7 * len(contrast_matrix)), squeeze=False)
    for ax, (name, weights) in zip(axes[:, 0], contrast_matrix.iterrows()):
        plotting.plot_contrast_matrix(weights.to_numpy()[None, :], design_matrix=design, axes=ax)
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
    return save_figure(fig, out_file)


def plot_map(img, out_file, *, bg_img=None, title: str = "", threshold: float | None = None, cmap="cold_hot",
             symmetric: bool = True, cut_coords=None, colorbar_label: str = "") -> Path:
    """A stat map on orthogonal slices (unthresholded unless ``threshold`` is given).

    ``bg_img``: an image, ``"MNI152"`` (nilearn's 2 mm template) or None (no background).

    Voxels outside the map (exact zeros) are transparent, so the background image shows around the brain.
    """
    fig = plt.figure(figsize=(9, 3.2))
    if threshold is None or not math.isfinite(threshold):
        threshold = 1e-6
    kwargs = {"symmetric_cbar": True} if symmetric else {"symmetric_cbar": False}
    display = plotting.plot_stat_map(img, bg_img=background(bg_img), display_mode="ortho", cut_coords=cut_coords,
                                     threshold=threshold, cmap=cmap, title=title or None, figure=fig,
                                     colorbar=True, black_bg=False,
                                     draw_cross=False, **kwargs)
    if colorbar_label:
        # the colour bar is the one axes of the figure that is neither the display's frame nor a cut (both are
        # documented attributes of nilearn's displays); a vertical colour bar's label is its y label
        own = {a.ax for a in display.axes.values()} | {display.frame_axes}
        for cbar_ax in [a for a in fig.axes if a not in own]:
            cbar_ax.set_ylabel(colorbar_label)
    return save_figure(fig, out_file)


def plot_glass(thresholded_img, out_file, *, title: str = "", threshold: float | None = None) -> Path:
    """Glass brain of a thresholded map (both signs).

    ``threshold``: the cut-off already applied to the map (voxels at or below it are transparent); by default
    every non-zero voxel is drawn. Without a threshold nilearn would draw the zeros of a two-sided map in the
    middle colour of ``cold_hot`` (black), as opaque boxes over the outlines.
    """
    fig = plt.figure(figsize=(9, 3.2))
    data = np.asarray(thresholded_img.dataobj)
    vmax = float(np.abs(data).max()) or 1.0
    if threshold is None or not math.isfinite(threshold) or threshold <= 0:
        threshold = 1e-6
    with glass_brain_outlines():
        plotting.plot_glass_brain(thresholded_img, figure=fig, display_mode="lyrz", colorbar=True, plot_abs=False,
                                  cmap="cold_hot", symmetric_cbar=True, vmax=vmax, title=title or None,
                                  threshold=threshold)
    return save_figure(fig, out_file)


def plot_threshold_panel(thresholded: dict[str, object], labels: dict[str, str], counts: dict[str, str],
                         out_file, *, columns: int = 2) -> Path:
    """One glass brain per threshold (sagittal and axial views) in a grid of ``columns``, one colour bar for all.

    Each threshold's label and counts are the title above its views, outside the brain, so that no outline, L/R
    letter or colour-bar tick is covered; every view has the same colour scale (the largest |z| of the maps), so
    one colour bar serves them all, and the grid keeps six thresholds on about half a printed page.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    n = len(thresholded)
    cols = max(1, min(columns, n))
    rows = math.ceil(n / cols)
    fig = plt.figure(figsize=(4.3 * cols + 0.7, 2.45 * rows))
    grid = fig.add_gridspec(rows, cols + 1, width_ratios=[1.0] * cols + [0.035], hspace=0.5, wspace=0.06)
    vmax = max([float(np.abs(np.asarray(img.dataobj)).max()) for img in thresholded.values()] + [1.0])
    for i, (key, img) in enumerate(thresholded.items()):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        ax.set_title(f"{labels[key]}\n{counts[key]}", fontsize=10, loc="left")
        with glass_brain_outlines():
            plotting.plot_glass_brain(img, axes=ax, display_mode="xz", colorbar=False, plot_abs=False,
                                      cmap="cold_hot", symmetric_cbar=True, vmax=vmax, threshold=1e-6)
    cax = fig.add_subplot(grid[:, cols])
    fig.colorbar(ScalarMappable(Normalize(-vmax, vmax), cmap="cold_hot"), cax=cax, label="z")
    return save_figure(fig, out_file)


def plot_volumes(bold_img, out_file, n: int = 4) -> Path:
    """Axial middle slice of the first ``n`` volumes."""
    data = np.asarray(bold_img.dataobj[..., :n], dtype=np.float32)
    z = data.shape[2] // 2
    vmax = float(np.percentile(data, 99.5))
    fig, axes = plt.subplots(1, n, figsize=(2.4 * n, 2.8))
    for i, ax in enumerate(np.atleast_1d(axes)):
        ax.imshow(np.rot90(data[:, :, z, i]), cmap="gray", vmin=0, vmax=vmax)
        ax.set_title(f"volume {i + 1}", fontsize=9)
        ax.axis("off")
    return save_figure(fig, out_file)


def plot_image(img, out_file, *, title: str = "") -> Path:
    """An anatomical or mean image on orthogonal slices."""
    from nilearn.image import load_img

    img = load_img(img)
    # the colour bar's ticks as whole numbers for raw scanner units (a mean BOLD of about 1,000: nilearn's default
    # "%.2g" printed 1e+03 and 8.5e+02), with two significant digits for a normalised image (0.36 to 0.96)
    peak = float(np.nanmax(np.abs(np.asarray(img.dataobj, dtype=float))))
    fig = plt.figure(figsize=(9, 3.2))
    plotting.plot_anat(img, figure=fig, title=title or None, draw_cross=False, black_bg=False, dim=-0.5,
                       cbar_tick_format="%.0f" if peak >= 100 else "%.2g")
    return save_figure(fig, out_file)


def plot_viewer(img, out_file, *, mni: bool, threshold: float | None = None, title: str = "") -> Path:
    """nilearn's interactive viewer of a stat map, saved as the self-contained ``<iframe>`` a notebook shows.

    ``mni``: the MNI152 template as background (else none); ``threshold``: voxels below it are transparent.
    """
    from nilearn.plotting import view_img

    view = view_img(img, bg_img=background(MNI_BACKGROUND) if mni else False,
                    threshold=threshold if threshold is not None and math.isfinite(threshold) else None,
                    title=title or None, symmetric_cmap=True, width_view=640)
    out_file = Path(out_file)
    html = view.get_iframe()
    # nilearn's page links its favicon from the internet; the report must open offline
    html = re.sub(r"&lt;link rel=&quot;icon&quot;.*?/&gt;", "", html, count=1, flags=re.S)
    # nilearn names the viewer's elements with a random uuid4; a name derived from the file keeps the output
    # byte-identical from run to run
    match = re.search(r"viewer-([0-9a-f]{32})", html)
    if match:
        html = html.replace(match.group(1), hashlib.md5(out_file.name.encode()).hexdigest())
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(html, encoding="utf-8")
    return out_file
