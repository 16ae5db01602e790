"""Quarto's freeze is emptied whenever results or package code change, and kept otherwise."""

import yaml

from analysis.freeze import fingerprint, sync_freeze
from conftest import PROJECT


def _package(tmp_path, template="A {{ x }}."):
    pkg = tmp_path / "pkg"
    (pkg / "templates").mkdir(parents=True, exist_ok=True)
    (pkg / "mod.py").write_text("X = 1\n")
    (pkg / "templates" / "t.md.j2").write_text(template)
    return pkg


def _frozen(project):
    d = project / "_freeze" / "chapters" / "03-results"
    d.mkdir(parents=True, exist_ok=True)
    (d / "execute-results.json").write_text("{}")
    return d


def test_freeze_kept_when_nothing_changed_and_emptied_when_anything_does(tmp_path):
    project, cache = tmp_path / "project", tmp_path / "cache"
    pkg = _package(tmp_path)
    assert sync_freeze("key1", project, cache, pkg)  # first render: nothing to keep
    frozen = _frozen(project)
    assert not sync_freeze("key1", project, cache, pkg) and frozen.exists()  # prose edit only: keep

    assert sync_freeze("key2", project, cache, pkg) and not frozen.exists()  # new results: discard
    frozen = _frozen(project)
    _package(tmp_path, template="B {{ x }}.")  # a template edit changes the prose of every chapter
    assert sync_freeze("key2", project, cache, pkg) and not frozen.exists()


def test_fingerprint_covers_code_and_templates(tmp_path):
    pkg = _package(tmp_path)
    a = fingerprint("k", pkg)
    (pkg / "mod.py").write_text("X = 2\n")
    assert fingerprint("k", pkg) != a and fingerprint("k", pkg) != fingerprint("other", pkg)


def test_project_freezes_with_the_hook_in_place():
    cfg = yaml.safe_load((PROJECT / "_quarto.yml").read_text())
    assert cfg["execute"]["freeze"] == "auto"
    assert cfg["project"]["pre-render"].strip() == "python -m analysis --prerender"


def test_prerender_fast_path_only_when_nothing_it_read_changed(tmp_path, monkeypatch):
    """The pre-render stamp matches only while the args, config bytes, env and every watched stamp are the same."""
    from analysis import freeze

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(freeze, "_RACY_NS", 0)
    cfg = tmp_path / "a.toml"
    cfg.write_text('[output]\ndir = "out"\ncache_dir = "cache"\n')
    out = tmp_path / "out"
    (out / "figures").mkdir(parents=True)
    fig, title = out / "figures" / "f.png", tmp_path / "_report-metadata.yml"
    fig.write_bytes(b"png")
    title.write_text("book: {}\n")
    args = [str(cfg), None]
    assert freeze.prerender_is_current(args, cfg) is None  # never recorded
    assert freeze.record_prerender(args, cfg, [fig], [title], "summary line")
    assert (out / "cache" / freeze.PRERENDER_STAMP).exists()
    assert freeze.prerender_is_current(args, cfg) == "summary line"
    assert freeze.prerender_is_current([str(cfg), "simulated"], cfg) is None  # another --dataset
    monkeypatch.setenv("NILEARN_DATA", str(tmp_path / "elsewhere"))
    assert freeze.prerender_is_current(args, cfg) is None
    monkeypatch.delenv("NILEARN_DATA")
    monkeypatch.delenv("ANALYSIS_CONFIG", raising=False)
    freeze.record_prerender(args, cfg, [fig], [title], "summary line")
    assert freeze.prerender_is_current(args, cfg) == "summary line"
    fig.write_bytes(b"png")  # same bytes, rewritten: a new stamp
    assert freeze.prerender_is_current(args, cfg) is None
    freeze.record_prerender(args, cfg, [fig], [title], "summary line")
    title.unlink()  # the title page deleted
    assert freeze.prerender_is_current(args, cfg) is None
    title.write_text("book: {}\n")
    freeze.record_prerender(args, cfg, [fig], [title], "summary line")
    cfg.write_text('[output]\ndir = "out"\ncache_dir = "cache"\n# a comment\n')
    assert freeze.prerender_is_current(args, cfg) is None  # the config's bytes


def test_prerender_stamp_not_saved_while_files_are_fresh(tmp_path, monkeypatch):
    from analysis import freeze

    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "a.toml"
    cfg.write_text('[output]\ndir = "."\n')
    fresh = tmp_path / "fresh.tsv"
    fresh.write_text("x\n")  # written just now: it could change again within the same time stamp
    assert not freeze.record_prerender([str(cfg), None], cfg, [fresh], [], "s")
    assert freeze.prerender_is_current([str(cfg), None], cfg) is None


def test_second_prerender_skips_the_python_stack(sim_results, sim_config_path, tmp_path):
    """After a complete pre-render with nothing changed, the hook imports neither numpy nor pandas."""
    import os
    import shutil
    import subprocess
    import sys

    driver = ("import sys; import analysis.freeze as f; f._RACY_NS = 0; from analysis.__main__ import main; "
              "rc = main(sys.argv[1:]); print('heavy' if 'pandas' in sys.modules or 'numpy' in sys.modules "
              "else 'light'); sys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    env.pop("ANALYSIS_CONFIG", None)
    (tmp_path / "index.qmd").write_text("`{python} 1`\n")
    runs = [subprocess.run([sys.executable, "-c", driver, "--prerender", "--config", str(sim_config_path)],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr[-2000:]
    first, second = (r.stdout.strip().splitlines() for r in runs)
    assert first[-1] == "heavy" and second[-1] == "light"
    assert first[:-1] == second[:-1] and "contrast" in second[0]  # the same summary line
    assert (tmp_path / "_report-metadata.yml").exists()
    shutil.rmtree(tmp_path / "_freeze")
    third = subprocess.run([sys.executable, "-c", driver, "--prerender", "--config", str(sim_config_path)],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert third.stdout.strip().endswith("light")
    assert (tmp_path / "_freeze" / "index" / "execute-results" / "typ.json").is_symlink()  # re-made on the fast path
