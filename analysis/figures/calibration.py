"""Calibration panel: z histogram, QQ plot and exceedance shares (observed vs null designs)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter, NullFormatter
from scipy import stats

from ._base import save_figure

__all__ = ["plot_calibration"]

_OBSERVED = "#1f4e79"
_NULL = "#c0504d"
_REFERENCE = "#444444"


def plot_calibration(cal, out_file: str | Path) -> Path:
    """Draw the calibration panel of one contrast.

    Left: density of z in the mask (bars) with the standard normal (solid) and the
    empirical null (dashed), and the pooled null-design z (red line). Middle: QQ plot of
    observed and null-design z against N(0, 1). Right: share of voxels beyond each |z|
    threshold, nominal vs observed vs each null design (log scale).

    Parameters
    ----------
    cal : analysis.calibration.Calibration
    out_file : str or Path

    Returns
    -------
    Path
    """
    # a fixed layout (the file is cropped to its content on saving): constrained layout ran its solver at each of
    # the two draws of a saving and was a quarter of the figure's time. 7.5 in wide, about the width it is shown
    # at (the HTML text column, the PDF's text width), so that its 7-9 pt text is read at about that size (at
    # 11 in, the legends printed at 4 pt)
    fig, (ax_h, ax_q, ax_s) = plt.subplots(1, 3, figsize=(7.5, 2.9))
    fig.subplots_adjust(left=0.08, right=0.99, bottom=0.2, top=0.9, wspace=0.4)
    for ax in (ax_h, ax_q, ax_s):
        ax.tick_params(labelsize=7)

    edges = np.asarray(cal.hist_edges)
    centers = (edges[:-1] + edges[1:]) / 2
    ax_h.bar(centers, cal.hist_observed, width=np.diff(edges), color=_OBSERVED, alpha=0.35,
             label="observed z", linewidth=0)
    if cal.n_null:
        ax_h.step(centers, cal.hist_null, where="mid", color=_NULL, lw=1.2, label="null designs")
    grid = np.linspace(edges[0], edges[-1], 400)
    ax_h.plot(grid, stats.norm.pdf(grid), color=_REFERENCE, lw=1.2, label="N(0, 1)")
    ax_h.plot(grid, stats.norm.pdf(grid, cal.null_mean, cal.null_sd), color=_OBSERVED, lw=1.2, ls="--",
              label=f"empirical null (SD {cal.null_sd:.2f})")
    ax_h.axvspan(-cal.null_window, cal.null_window, color="0.9", zorder=0)
    ax_h.set_xlim(-5, 5)
    ax_h.set_xlabel("z", fontsize=8)
    ax_h.set_ylabel("density", fontsize=8)
    ax_h.set_title("Distribution of z", loc="left", fontsize=9)
    # head room above the curves for the legend, which would otherwise lie over their left flank
    ax_h.set_ylim(0, ax_h.get_ylim()[1] * 1.55)
    ax_h.legend(fontsize=6.5, frameon=False, loc="upper left")

    theo = np.asarray(cal.qq_theoretical)
    ax_q.plot(theo, cal.qq_observed, ".", ms=3, color=_OBSERVED, label="observed z")
    if cal.n_null:
        ax_q.plot(theo, cal.qq_null, ".", ms=3, color=_NULL, label="null designs")
    lim = float(np.nanmax(np.abs(np.r_[theo, cal.qq_observed, cal.qq_null or 0.0]))) * 1.05
    ax_q.plot([-lim, lim], [-lim, lim], color=_REFERENCE, lw=1, label="identity")
    for t in cal.thresholds[-1:]:
        for s in (-t, t):
            ax_q.axhline(s, color="0.75", lw=0.7, ls=":")
    ax_q.set_xlim(-lim, lim)
    ax_q.set_ylim(-lim, lim)
    ax_q.set_aspect("equal")
    ax_q.set_xlabel("N(0, 1) quantile", fontsize=8)
    ax_q.set_ylabel("z quantile", fontsize=8)
    ax_q.set_title("QQ plot", loc="left", fontsize=9)
    ax_q.legend(fontsize=6.5, frameon=False, loc="upper left")

    x = np.arange(len(cal.thresholds))
    ax_s.plot(x, cal.nominal_share, "_", ms=22, mew=2, color=_REFERENCE, label="nominal")
    ax_s.plot(x, cal.observed_share, "o", color=_OBSERVED, label="observed")
    for i, shares in enumerate(cal.null_design_share):
        ax_s.plot(x + 0.15, shares, "x", ms=4, color=_NULL, alpha=0.7,
                  label="null designs" if i == 0 else None)
    if cal.null_design_pooled_share:
        ax_s.plot(x + 0.15, cal.null_design_pooled_share, "s", mfc="none", color=_NULL, label="null pooled")
    ax_s.set_yscale("log")
    # ticks at the nominal shares, as plain decimals (0.05, 0.01, 0.001): they read better than powers of ten
    ax_s.set_yticks(cal.nominal_share)
    ax_s.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.1g}"))
    ax_s.yaxis.set_minor_formatter(NullFormatter())
    ax_s.set_xticks(x, [f"|z| > {t:.2f}" for t in cal.thresholds], fontsize=7)
    ax_s.set_xlim(-0.5, len(x) - 0.5)
    ax_s.set_ylabel("share of voxels", fontsize=8)
    ax_s.set_title("Beyond threshold", loc="left", fontsize=9)
    ax_s.legend(fontsize=6.5, frameon=False)

    return save_figure(fig, out_file)
