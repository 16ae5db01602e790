"""Shared figure plumbing: one style, deterministic files."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from . import MNI_BACKGROUND  # noqa: E402

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
    if suffix != ".png" or not _save_cropped_png(fig, out_file, metadata):
        fig.savefig(out_file, dpi=DPI, bbox_inches="tight", metadata=metadata)
    plt.close(fig)
    return out_file


def _save_cropped_png(fig, out_file: Path, metadata: dict) -> bool:
    """Write ``fig`` as a PNG cut to its tight bounding box, from one draw instead of two.

    ``savefig(bbox_inches="tight")`` draws a figure twice: once without rendering, to lay it out and measure every
    artist, and once for real inside the measured box; for the glass brains (thousands of outline patches) the
    first pass is a quarter of the drawing time. Here the figure is drawn once, the same tight box is measured on
    that draw (``Figure.get_tightbbox``, padded by ``savefig.pad_inches``, as ``savefig`` does) and the pixels
    inside it are written by the PNG writer ``savefig`` uses (``matplotlib.image.imsave``). When the box reaches
    beyond the figure's edge (an artist drawn outside it, which only a second draw can show) this returns False
    and the figure is saved the usual way.
    """
    import matplotlib.colors
    import matplotlib.image
    import numpy as np

    fig.set_dpi(DPI)
    fig.canvas.draw()
    box = fig.get_tightbbox(fig.canvas.get_renderer())
    width, height = fig.get_size_inches()
    slack = 0.5 / DPI  # half a pixel: an axes spanning the whole figure measures a hair beyond it
    if box.x0 < -slack or box.y0 < -slack or box.x1 > width + slack or box.y1 > height + slack:
        return False
    box = box.padded(matplotlib.rcParams["savefig.pad_inches"])
    pixels = np.asarray(fig.canvas.buffer_rgba())
    # the pixel size savefig gives the box; the box's corner on the nearest pixel
    left, top = int(round(box.x0 * DPI)), int(round((height - box.y1) * DPI))
    right, bottom = left + int(box.width * DPI), top + int(box.height * DPI)
    # the padding beyond the figure's edge is the figure's background colour, as in a tight savefig
    out = np.empty((bottom - top, right - left, 4), np.uint8)
    out[...] = np.round(np.asarray(matplotlib.colors.to_rgba(fig.get_facecolor())) * 255).astype(np.uint8)
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(bottom, pixels.shape[0]), min(right, pixels.shape[1])
    out[r0 - top:r1 - top, c0 - left:c1 - left] = pixels[r0:r1, c0:c1]
    matplotlib.image.imsave(out_file, out, format="png", dpi=DPI, metadata=metadata)
    return True


@contextlib.contextmanager
def glass_brain_outlines():
    """Draw nilearn glass brains without matplotlib's per-patch data-limit updates.

    nilearn draws each glass-brain view as a few hundred outline patches (``PathPatch``); ``Axes.add_patch``
    walks the Bezier curves of every one of them to grow the axes' data limits, which is a large part of the
    time a glass brain takes. A glass-brain axes sets its limits from the outline's own bounds (nilearn's
    ``add_object_bounds``), so the data limits are never used. Inside this block a ``PathPatch`` is added with
    ``Axes.add_artist``, matplotlib's documented way to add an artist that takes no part in autoscaling (the
    same clip path, z-order and draw order as ``add_patch``): the image is unchanged, byte for byte
    (``tests/test_figures_parallel.py`` checks it), and the figure draws faster. Public API only.
    """
    import matplotlib.axes
    import matplotlib.patches

    original = matplotlib.axes.Axes.add_patch

    def add_patch(self, patch):
        if isinstance(patch, matplotlib.patches.PathPatch):
            return self.add_artist(patch)
        return original(self, patch)

    matplotlib.axes.Axes.add_patch = add_patch
    try:
        yield
    finally:
        matplotlib.axes.Axes.add_patch = original


@functools.lru_cache(maxsize=1)
def _mni152_2mm():
    """nilearn's ``load_mni152_template(resolution=2)``, ten times faster.

    nilearn resamples its 1 mm template onto a 2 mm grid with the same origin by cubic-spline interpolation; the
    2 mm grid points are every other 1 mm voxel, where the spline passes through the voxel values, so the result
    is the 1 mm array taken with a step of 2 (equal to 1e-15; ``tests/test_figures_parallel.py`` checks it).
    Anything else (another template layout) takes nilearn's own route.
    """
    import nibabel as nib
    import numpy as np
    from nilearn.datasets import load_mni152_template

    one = load_mni152_template(resolution=1)
    if not np.allclose(one.affine[:3, :3], np.eye(3)):  # pragma: no cover - a different template
        return load_mni152_template(resolution=2)
    affine = one.affine.copy()
    affine[:3, :3] = np.eye(3) * 2
    return nib.Nifti1Image(np.asarray(one.get_fdata()[::2, ::2, ::2], dtype=np.float64), affine)


def background(bg_img):
    """The background image to draw on: the MNI152 template for ``MNI_BACKGROUND``, else ``bg_img`` itself."""
    if isinstance(bg_img, str) and bg_img == MNI_BACKGROUND:
        return _mni152_2mm()
    return bg_img


def warm_up() -> None:
    """Pay a drawing process's first-figure costs (fonts, text layout, PNG writer, lazily imported plotting
    modules, the MNI background) while it waits for its first job, not during it."""
    import importlib
    import io

    for name in ("nilearn.plotting.displays", "nilearn.plotting.html_stat_map", "nilearn.plotting.glass_brain"):
        try:
            importlib.import_module(name)
        except ImportError:  # pragma: no cover - another nilearn layout
            pass
    _mni152_2mm()
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.imshow([[0.0, 1.0], [1.0, 0.0]], cmap="gray")
    ax.plot([0, 1], [0, 1])
    ax.set_title("warm-up")
    fig.savefig(io.BytesIO(), format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
