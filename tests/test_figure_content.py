"""What the map figures show, read from their PNG pixels, on planted data (not just that a file exists).

A glass brain of a thresholded map must show the brain outline, draw the planted suprathreshold voxels in the
colours of their sign, and leave everything else see-through: no large opaque (black) region. This is the
check that catches a glass brain whose sub-threshold voxels are drawn as opaque boxes.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from matplotlib import image as mpimg
from scipy import ndimage

from analysis.figures import maps

POS, NEG = (52, -24, 8), (-38, 30, 24)


@pytest.fixture(scope="module")
def planted_thresholded():
    return _planted_thresholded()


def _planted_thresholded():
    """A thresholded two-sided z map on the 2 mm MNI grid: a +6 peak at POS, a -5 peak at NEG, zero elsewhere."""
    from nilearn.datasets import load_mni152_brain_mask

    mask = load_mni152_brain_mask(resolution=2)
    ijk = np.indices(mask.shape).reshape(3, -1).T
    xyz = nib.affines.apply_affine(mask.affine, ijk).reshape(*mask.shape, 3)
    data = np.zeros(mask.shape, np.float32)
    for centre, radius, peak in ((POS, 8.0, 6.0), (NEG, 7.0, -5.0)):  # z from the peak down to 3.5 at the rim
        d = np.sqrt(((xyz - centre) ** 2).sum(-1))
        blob = d < radius
        data[blob] = np.sign(peak) * (3.5 + (abs(peak) - 3.5) * (1 - d[blob] / radius))
    return nib.Nifti1Image(data, mask.affine)


def _rgb(path):
    img = mpimg.imread(path)
    return img[..., :3], (img[..., 3] if img.shape[-1] == 4 else np.ones(img.shape[:2]))


def _content(rgb, alpha, colorbar_fraction: float):
    """Masks of what a glass brain panel shows, colour bar cut off on the right."""
    width = rgb.shape[1]
    rgb, alpha = rgb[:, : int(width * (1 - colorbar_fraction))], alpha[:, : int(width * (1 - colorbar_fraction))]
    r, b = rgb[..., 0], rgb[..., 2]
    opaque = alpha > 0.5
    black = opaque & (rgb.max(-1) < 0.12)
    hot = opaque & (r > 0.8) & (b < 0.5) & (r - b > 0.4)  # red-yellow: positive z
    cold = opaque & (b > 0.7) & (r < 0.4) & (b - r > 0.4)  # blue-cyan: negative z
    grey = opaque & (np.ptp(rgb, axis=-1) < 0.06) & (rgb.mean(-1) > 0.15) & (rgb.mean(-1) < 0.75)  # outlines
    labels, n = ndimage.label(black)
    largest = np.bincount(labels.ravel())[1:].max() if n else 0
    # "black": the largest connected opaque black region, as a fraction of the image (a panel title's box is
    # about 1 %; a sub-threshold box covers a whole view)
    return {"black": largest / black.size, "hot": hot.sum(), "cold": cold.sum(), "grey": grey.sum()}


def test_glass_brain_shows_outline_and_planted_voxels_and_no_opaque_box(planted_thresholded, tmp_path):
    path = maps.plot_glass(planted_thresholded, tmp_path / "glass.png")
    c = _content(*_rgb(path), colorbar_fraction=0.12)
    assert c["black"] < 0.02, f"{c['black']:.0%} of the panel is opaque black: sub-threshold voxels drawn as boxes"
    assert c["grey"] > 2000, "the brain outline is not visible"
    assert c["hot"] > 200, "the positive planted cluster is not drawn in warm colours"
    assert c["cold"] > 100, "the negative planted cluster is not drawn in cold colours"


def test_glass_brain_with_the_applied_threshold_draws_the_same_voxels(planted_thresholded, tmp_path):
    default = _content(*_rgb(maps.plot_glass(planted_thresholded, tmp_path / "a.png")), colorbar_fraction=0.12)
    with_thr = _content(*_rgb(maps.plot_glass(planted_thresholded, tmp_path / "b.png", threshold=4.0)),
                        colorbar_fraction=0.12)
    assert with_thr["black"] < 0.02 and with_thr["hot"] > 0.5 * default["hot"]


def test_threshold_panel_shows_each_threshold_without_opaque_boxes(planted_thresholded, tmp_path):
    empty = nib.Nifti1Image(np.zeros(planted_thresholded.shape, np.float32), planted_thresholded.affine)
    path = maps.plot_threshold_panel({"a": planted_thresholded, "b": empty}, {"a": "A", "b": "B"},
                                     {"a": "some voxels", "b": "no voxel"}, tmp_path / "panel.png")
    c = _content(*_rgb(path), colorbar_fraction=0.12)
    assert c["black"] < 0.02 and c["grey"] > 2000 and c["hot"] > 100 and c["cold"] > 50


def test_six_thresholds_fit_half_a_printed_page_with_titles_clear_of_the_brains(planted_thresholded, tmp_path):
    """Six thresholds (the report's) in a grid: wider than tall, so the figure fits below a table on an A4 page
    (stacked in one column it was twice as tall as wide, and the PDF left a page blank before it); each title sits
    in the white band above its views, not over the outlines or the L/R letters."""
    keys = list("abcdef")
    path = maps.plot_threshold_panel({k: planted_thresholded for k in keys}, {k: f"threshold {k}" for k in keys},
                                     {k: "338 + / 0 - voxels" for k in keys}, tmp_path / "six.png")
    rgb, alpha = _rgb(path)
    height, width = rgb.shape[:2]
    assert height / width < 0.9, f"{width}x{height}: too tall for half a page"
    c = _content(rgb, alpha, colorbar_fraction=0.12)
    assert c["black"] < 0.02 and c["hot"] > 6 * 100 and c["cold"] > 6 * 50
    # a title's text is dark; the brain outlines are grey: between the three rows of views there is a band of
    # rows with dark text and no grey outline (the titles of the second and third rows)
    opaque = alpha > 0.5
    dark = (opaque & (rgb.max(-1) < 0.3)).any(axis=1)
    grey = (opaque & (np.ptp(rgb, axis=-1) < 0.06) & (rgb.mean(-1) > 0.15) & (rgb.mean(-1) < 0.75))
    outline_rows = grey[:, : int(width * 0.88)].sum(axis=1) > 0
    title_rows = dark & ~outline_rows
    bands = ndimage.label(title_rows)[1]
    assert bands >= 3, f"{bands} bands of title text clear of the outlines (one above each row of views)"


def test_the_check_catches_opaque_sub_threshold_voxels(planted_thresholded, tmp_path):
    """The defect this file guards against, drawn on purpose: nilearn without a threshold on a two-sided map."""
    import matplotlib.pyplot as plt
    from nilearn import plotting

    fig = plt.figure(figsize=(9, 3.2))
    plotting.plot_glass_brain(planted_thresholded, figure=fig, display_mode="lyrz", colorbar=True,
                              plot_abs=False, cmap="cold_hot", symmetric_cbar=True, threshold=None)
    fig.savefig(tmp_path / "broken.png", dpi=150, bbox_inches="tight")
    plt.close(fig)
    assert _content(*_rgb(tmp_path / "broken.png"), colorbar_fraction=0.12)["black"] > 0.2


def test_dmn_node_effects_label_every_node_legibly_without_overlap(monkeypatch, tmp_path):
    """The forest plot of the DMN nodes (67 Seitzman spheres, 12 control nodes, two network means): every node
    has its own label at a size that can be read where the figure is shown (>= 6.5 pt on a 6 in figure, printed
    at about the text width), no two labels overlap, and it stays within 8 in (a PDF page with its caption)."""
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from types import SimpleNamespace

    from analysis.figures import dmn as dmn_figs

    rng = np.random.default_rng(0)

    def table(prefix, n):
        eff = rng.normal(0, 0.2, n)
        return pd.DataFrame({"ROI": [f"{prefix}{i:02d}" for i in range(1, n + 1)], "Effect": eff,
                             "CI Low": eff - 0.1, "CI High": eff + 0.1, "q": rng.uniform(0, 0.2, n),
                             "Unit": "% signal change"})

    nodes, control = table("DMN", 67), table("AUD", 12)
    net = SimpleNamespace(effect=-0.03, ci_low=-0.04, ci_high=-0.02)  # what the plot reads of a NetworkTest
    shown = {}

    def keep(fig, out_file):  # the figure as it would be saved, to read its artists
        fig.canvas.draw()
        shown["fig"] = fig
        return out_file

    monkeypatch.setattr(dmn_figs, "save_figure", keep)
    dmn_figs.plot_roi_effects(nodes, tmp_path / "x.png", control_table=control, network=net, control_network=net,
                              control_name="Auditory")
    fig = shown["fig"]
    assert fig.get_figheight() <= 8.0
    labels = [t for ax in fig.axes for t in ax.get_yticklabels() if t.get_text()]
    assert sorted(t.get_text() for t in labels) == sorted([*nodes["ROI"], *control["ROI"], "DMN (network)",
                                                           "Auditory (network)"])
    assert min(t.get_fontsize() for t in labels) >= 6.5
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        boxes = sorted((t.get_window_extent(renderer) for t in ax.get_yticklabels() if t.get_text()),
                       key=lambda b: b.y0)
        assert all(a.y1 <= b.y0 + 0.5 for a, b in zip(boxes, boxes[1:])), "tick labels overlap"
