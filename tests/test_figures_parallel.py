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
