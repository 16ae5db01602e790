"""Shared figure plumbing: one style, deterministic files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DPI = 150
matplotlib.rcParams["svg.hashsalt"] = "analysis"  # stable SVG ids


def save_figure(fig, out_file: str | Path) -> Path:
    """Save ``fig`` to ``out_file`` with no timestamps in the metadata and close it.

    PNG, SVG and PDF files are byte-identical when the figure content is the same.
    """
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    suffix = out_file.suffix.lower()
    metadata = {"Software": None} if suffix == ".png" else {"Date": None}
    fig.savefig(out_file, dpi=DPI, bbox_inches="tight", metadata=metadata)
    plt.close(fig)
    return out_file
