"""Figures drawn by worker processes are byte-identical to figures drawn in the main process."""

import hashlib

import numpy as np
import pandas as pd
import pytest

from analysis.figures import maps
from analysis.figures.parallel import FigurePool, draw_all


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _jobs(folder, bold_img):
    design = pd.DataFrame({"listening": np.tile([0.0, 1.0], 5), "constant": 1.0})
    return [(maps.plot_design, (design, folder / "design.png"), {}),
            (maps.plot_glass, (bold_img.slicer[..., 0], folder / "glass.png"), {}),
            (maps.plot_volumes, (bold_img.slicer[..., :4], folder / "volumes.png"), {"n": 4})]


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_parallel_figures_are_byte_identical(tmp_path, bold_img, start_method):
    import multiprocessing

    if start_method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {start_method} here")
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    paths = draw_all(_jobs(serial, bold_img), n_jobs=0)
    with FigurePool(n_jobs=2, start_method=start_method) as pool:
        for func, args, kwargs in _jobs(parallel, bold_img):
            pool.submit(func, *args, **kwargs)
        assert [p.name for p in pool.results()] == [p.name for p in paths]
    for p in paths:
        assert _digest(p) == _digest(parallel / p.name), p.name


def test_a_failing_figure_raises_in_the_caller(tmp_path):
    with pytest.raises(TypeError):
        draw_all([(maps.plot_design, (None, tmp_path / "x.png"), {}), (maps.plot_design, (), {})], n_jobs=2)


def test_glass_brain_shortcut_leaves_the_images_unchanged(tmp_path, bold_img, monkeypatch):
    """glass_brain_outlines() skips matplotlib's data-limit updates: the PNGs are byte for byte the same."""
    import pandas as pd

    from analysis.figures import _base, dmn

    img = bold_img.slicer[..., 0]
    nodes = pd.DataFrame({"X": [0.0, -40.0], "Y": [-52.0, 20.0], "Z": [26.0, 10.0]})

    def draw(folder):
        return [maps.plot_glass(img, folder / "glass.png"),
                maps.plot_threshold_panel({"a": img, "b": img}, {"a": "A", "b": "B"}, {"a": "1", "b": "2"},
                                          folder / "panel.png"),
                dmn.plot_dmn_nodes(nodes, folder / "nodes.png")]

    fast = draw(tmp_path / "fast")
    monkeypatch.setattr(_base, "glass_brain_outlines", _plain_context)
    monkeypatch.setattr(maps, "glass_brain_outlines", _plain_context)
    monkeypatch.setattr(dmn, "glass_brain_outlines", _plain_context)
    plain = draw(tmp_path / "plain")
    for a, b in zip(fast, plain, strict=True):
        assert _digest(a) == _digest(b), a.name


def test_one_draw_save_matches_matplotlibs_tight_save(tmp_path, bold_img, monkeypatch):
    """save_figure draws once and cuts the tight box itself: the PNG has the size savefig(bbox_inches="tight")
    gives and the same pixels up to a sub-pixel shift; a figure with text beyond its edge takes savefig's route."""
    import matplotlib.image
    import matplotlib.pyplot as plt

    from analysis.figures import _base

    img = bold_img.slicer[..., 0]

    def draw(folder):
        return [maps.plot_glass(img, folder / "glass.png"),
                maps.plot_threshold_panel({"a": img, "b": img, "c": img}, {"a": "A", "b": "B", "c": "C"},
                                          {"a": "1", "b": "2", "c": "3"}, folder / "panel.png"),
                maps.plot_volumes(bold_img, folder / "volumes.png")]

    calls = []
    cropped = _base._save_cropped_png
    monkeypatch.setattr(_base, "_save_cropped_png", lambda *a: calls.append(cropped(*a)) or calls[-1])
    one = draw(tmp_path / "one")
    assert calls == [True] * len(one)  # every one of these took the one-draw route
    monkeypatch.setattr(_base, "_save_cropped_png", lambda *a: False)
    two = draw(tmp_path / "two")
    for a, b in zip(one, two, strict=True):
        x, y = matplotlib.image.imread(a), matplotlib.image.imread(b)
        assert x.shape == y.shape, a.name
        shifted = min(float(np.abs(x[2:-2, 2:-2] - np.roll(y, (dy, dx), (0, 1))[2:-2, 2:-2]).mean())
                      for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        assert shifted < 0.02, a.name  # what differs is anti-aliasing along the edges
        assert np.abs(x - y).max(axis=2).mean() < 0.1, a.name
    monkeypatch.setattr(_base, "_save_cropped_png", cropped)
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, 1])
    fig.text(1.05, 0.5, "beyond the right edge")
    out = _base.save_figure(fig, tmp_path / "beyond.png")
    width = matplotlib.image.imread(out).shape[1]
    assert width > 3 * _base.DPI  # the tight box grew to show the text, as savefig does


def _plain_context():
    import contextlib

    return contextlib.nullcontext()


def test_figure_refs_resolve_where_drawn_and_pickle():
    import pickle

    from analysis.figures.parallel import FigureRef, figure_module

    ref = figure_module("maps").plot_glass
    assert isinstance(ref, FigureRef) and ref.resolve() is maps.plot_glass
    again = pickle.loads(pickle.dumps(ref))
    assert again.resolve() is maps.plot_glass
    with pytest.raises(AttributeError):
        figure_module("maps").no_such_figure.resolve()


def test_fast_mni_background_is_nilearns_2mm_template():
    from nilearn.datasets import load_mni152_template

    from analysis.figures._base import _mni152_2mm

    ours, theirs = _mni152_2mm(), load_mni152_template(resolution=2)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours.affine, theirs.affine)
    np.testing.assert_allclose(ours.get_fdata(), theirs.get_fdata(), rtol=0, atol=1e-12)
