"""Figures are a function of the saved results: redrawn byte for byte without fitting; the cache knows the code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from analysis import cache, pipeline
from analysis.results import Results

PACKAGE = Path(cache.__file__).parent


def _config(tmp_path: Path, out: Path) -> Path:
    cfg = tmp_path / "analysis.toml"
    cfg.write_text(f'[data]\ndataset = "simulated"\n[output]\ndir = "{out.as_posix()}"\n'
                   f'cache_dir = "{(tmp_path / "cache").as_posix()}"\n[calibration]\nn_null = 2\n'
                   '[dmn]\nseed_map = true\n', encoding="utf-8")
    return cfg


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("redraw")
    out = tmp / "out"
    cfg = _config(tmp, out)
    res = pipeline.run(cfg)
    return cfg, out, res


def _figure_bytes(out: Path, res: Results) -> dict[str, bytes]:
    return {role: (out / rel).read_bytes() for role, rel in res.figures.items()}


def _no_compute(*args, **kwargs):
    raise AssertionError("the analysis was recomputed")


def test_redraw_reproduces_every_figure_byte_for_byte_from_the_results_alone(project, tmp_path, monkeypatch):
    cfg, out, res = project
    before = _figure_bytes(out, res)
    assert len(before) >= 15 and {"volumes", "design", "listening.glass", "dmn.map", "dmn.seed", "calibration"} <= set(before)
    # the inputs (the simulated run in the cache) are not needed: hide them, and forbid any computation
    hidden = tmp_path / "hidden-cache"
    shutil.move(str(cfg.parent / "cache"), hidden)
    monkeypatch.setattr(pipeline, "_compute", _no_compute)
    try:
        paths = pipeline.redraw(cfg)
    finally:
        assert {p.name for p in (cfg.parent / "cache").iterdir()} <= {"analysis.lock"}  # only the lock was made
        shutil.rmtree(cfg.parent / "cache")
        shutil.move(str(hidden), cfg.parent / "cache")
    after = Results.from_json(out / "results" / "results.json")
    assert sorted(p.relative_to(out).as_posix() for p in paths) == sorted(res.figures.values())
    assert _figure_bytes(out, after) == before
    assert after.cache_key == res.cache_key


def test_redraw_command_needs_results(tmp_path):
    from analysis import data

    cfg = _config(tmp_path, tmp_path / "empty")
    with pytest.raises(data.DataError, match="no results to redraw"):
        pipeline.redraw(cfg)


def _package_copy(tmp_path: Path, edit: str) -> Path:
    copy = tmp_path / "analysis"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    path = copy / edit
    path.write_text(path.read_text(encoding="utf-8") + "\n# an edit\n", encoding="utf-8")
    return copy


def test_editing_a_computing_module_invalidates_the_cache(project, tmp_path, monkeypatch):
    cfg, out, res = project
    assert cache.valid_cached(pipeline.load_config(cfg), out) is not None
    original = cache.code_fingerprint()
    monkeypatch.setattr(cache, "PACKAGE_DIR", _package_copy(tmp_path, "glm.py"))
    assert cache.code_fingerprint() != original
    assert cache.valid_cached(pipeline.load_config(cfg), out) is None  # the stored key no longer matches
    monkeypatch.setattr(pipeline, "_compute", _no_compute)
    with pytest.raises(AssertionError, match="recomputed"):
        pipeline.run(cfg)


def test_editing_a_figure_module_redraws_only_the_figures(project, tmp_path, monkeypatch):
    cfg, out, res = project
    before = _figure_bytes(out, res)
    manifest = json.loads((out / "results" / "manifest.json").read_text())["files"]
    code = cache.code_fingerprint()
    monkeypatch.setattr(cache, "PACKAGE_DIR", _package_copy(tmp_path, "figures/maps.py"))
    assert cache.figures_fingerprint() != res.figures_code and cache.code_fingerprint() == code
    assert cache.valid_cached(pipeline.load_config(cfg), out) is not None  # the computation is still valid
    monkeypatch.setattr(pipeline, "_compute", _no_compute)
    new = pipeline.run(cfg)  # redraws the figures, never refits
    assert new.figures_code == cache.figures_fingerprint() != res.figures_code
    assert new.cache_key == res.cache_key
    assert _figure_bytes(out, new) == before  # (the edit was a comment: same pictures)
    after = json.loads((out / "results" / "manifest.json").read_text())["files"]
    changed = sorted(rel for rel in after if after[rel] != manifest.get(rel))
    assert changed == ["results/results.json"]  # every map and table kept; only the figure fingerprint moved
