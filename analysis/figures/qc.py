"""Preprocessing quality-control figures, like the reportlets of FEAT and fMRIPrep.

One figure per function, ``plot_*(..., out_file) -> Path``; they draw what
:func:`analysis.preprocess.preprocess` computed and compute nothing themselves.
Captions live in the chapters.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import gridspec
from nilearn import plotting

from ._base import save_figure

__all__ = ["plot_motion", "plot_registration", "plot_carpet"]

_TRANSLATIONS = ("trans_x", "trans_y", "trans_z")
_ROTATIONS = ("rot_x", "rot_y", "rot_z")
_AXIS_COLOURS = ("#1b9e77", "#d95f02", "#7570b3")


def _time_axis(n: int, t_r: float | None):
    if t_r:
        return np.arange(n) * float(t_r), "time (s)"
    return np.arange(n), "volume"


def plot_motion(motion: pd.DataFrame, fd, out_file, *, fd_threshold: float | None = 0.5,
                t_r: float | None = None) -> Path:
    """Motion traces (translations, rotations) and framewise displacement, stacked.

    Parameters
    ----------
    motion : DataFrame
        ``trans_x, trans_y, trans_z`` (mm) and ``rot_x, rot_y, rot_z`` (radians);
        rotations are drawn in degrees.
    fd : array-like
        Framewise displacement per volume (mm).
    out_file : str or Path
    fd_threshold : float, optional
        Draws the threshold and marks the volumes above it.
    t_r : float, optional
        Repetition time; the x axis is then in seconds instead of volumes.

    Returns
    -------
    Path
    """
    fd = np.asarray(fd, dtype=float)
    x, xlabel = _time_axis(len(motion), t_r)
    fig, axes = plt.subplots(3, 1, figsize=(8, 6), sharex=True,
                             gridspec_kw={"height_ratios": (1, 1, 1)})
    for name, colour in zip(_TRANSLATIONS, _AXIS_COLOURS):
        axes[0].plot(x, motion[name].to_numpy(), color=colour, lw=1.2, label=name[-1])
    axes[0].set_ylabel("translation (mm)")
    for name, colour in zip(_ROTATIONS, _AXIS_COLOURS):
        axes[1].plot(x, np.degrees(motion[name].to_numpy()), color=colour, lw=1.2, label=name[-1])
    axes[1].set_ylabel("rotation (°)")
    for ax in axes[:2]:
        ax.axhline(0.0, color="0.7", lw=0.6, zorder=0)
        ax.legend(loc="upper left", ncol=3, frameon=False, fontsize="small")
    axes[2].plot(x, fd, color="k", lw=1.2)
    if fd_threshold is not None:
        axes[2].axhline(fd_threshold, color="#e7298a", ls="--", lw=1.0,
                        label=f"{fd_threshold:g} mm")
        above = fd > fd_threshold
        if above.any():
            axes[2].plot(x[above], fd[above], "o", color="#e7298a", ms=4)
        axes[2].legend(loc="upper left", frameon=False, fontsize="small")
    axes[2].set_ylabel("FD (mm)")
    axes[2].set_xlabel(xlabel)
    axes[2].set_ylim(bottom=0)
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
        ax.margins(x=0)
    fig.align_ylabels(axes)
    return save_figure(fig, out_file)


def plot_registration(background_img, overlay_img, out_file, *, overlay: str = "contours",
                      levels=None, title: str = "", cut_coords: int = 6,
                      colour: str = "r") -> Path:
    """Registration check: edges or contours of one image over another, in three mosaics.

    Parameters
    ----------
    background_img : Nifti1Image
        Image drawn in grey (e.g. the normalised mean functional image, or the
        mean functional image resampled to the anatomical image).
    overlay_img : Nifti1Image
        Image whose outline is drawn on top (e.g. the MNI152 template or the
        anatomical image), on the same space.
    out_file : str or Path
    overlay : {"contours", "edges"}
        ``"contours"`` draws iso-intensity lines of ``overlay_img`` at ``levels``;
        ``"edges"`` draws its Canny edges (nilearn ``add_edges``).
    levels : sequence of float, optional
        Contour levels; by default half of the overlay's 99th percentile
        (roughly the brain outline of a T1 image).
    title : str
    cut_coords : int
        Slices per row (sagittal, coronal, axial).
    colour : str
        Line colour.

    Returns
    -------
    Path
    """
    if overlay not in ("contours", "edges"):
        raise ValueError(f"overlay must be 'contours' or 'edges', got {overlay!r}")
    if overlay == "contours" and levels is None:
        data = np.asarray(overlay_img.dataobj, dtype=float)
        positive = data[data > 0]
        levels = [0.5 * float(np.percentile(positive, 99))] if positive.size else [0.5]
    fig = plt.figure(figsize=(10, 5.4))
    grid = gridspec.GridSpec(3, 1, figure=fig, hspace=0.05)
    for row, mode in enumerate("xyz"):
        ax = fig.add_subplot(grid[row])
        display = plotting.plot_anat(background_img, display_mode=mode, cut_coords=cut_coords,
                                     axes=ax, figure=fig, annotate=(row == 2),
                                     draw_cross=False, black_bg=True, dim=-0.3, colorbar=False,
                                     title=title if (title and row == 0) else None)
        if overlay == "edges":
            display.add_edges(overlay_img, color=colour)
        else:
            display.add_contours(overlay_img, levels=list(levels), colors=colour, linewidths=0.8)
    return save_figure(fig, out_file)


def plot_carpet(bold_img, out_file, *, mask_img=None, t_r: float | None = None, fd=None,
                fd_threshold: float | None = 0.5, title: str = "") -> Path:
    """Carpet plot (voxels x time, nilearn ``plot_carpet``), with FD above when given.

    Parameters
    ----------
    bold_img : Nifti1Image
        4D run (e.g. realigned native run or normalised run before smoothing).
    out_file : str or Path
    mask_img : Nifti1Image, optional
        Voxels to show (by default nilearn computes an EPI mask).
    t_r : float, optional
        Repetition time (s), for the time axis.
    fd : array-like, optional
        Framewise displacement (mm) drawn above the carpet.
    fd_threshold : float, optional
        Threshold line on the FD panel.
    title : str

    Returns
    -------
    Path
    """
    if fd is None:
        fig = plt.figure(figsize=(9, 4.5))
        ax_carpet = fig.add_subplot(1, 1, 1)
    else:
        fd = np.asarray(fd, dtype=float)
        fig = plt.figure(figsize=(9, 5.8))
        grid = gridspec.GridSpec(2, 1, figure=fig, height_ratios=(1, 4), hspace=0.08)
        ax_fd = fig.add_subplot(grid[0])
        ax_fd.plot(np.arange(fd.size), fd, color="k", lw=1.0)
        if fd_threshold is not None:
            ax_fd.axhline(fd_threshold, color="#e7298a", ls="--", lw=0.8)
        ax_fd.set_xlim(-0.5, fd.size - 0.5)
        ax_fd.set_ylim(bottom=0)
        ax_fd.set_ylabel("FD (mm)")
        ax_fd.set_xticks([])
        ax_fd.spines[["top", "right"]].set_visible(False)
        if title:
            ax_fd.set_title(title)
        ax_carpet = fig.add_subplot(grid[1])
    plotting.plot_carpet(bold_img, mask_img=mask_img, t_r=t_r, figure=fig, axes=ax_carpet,
                         title=title if (title and fd is None) else None)
    return save_figure(fig, out_file)
