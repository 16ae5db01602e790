"""The pre-render hook's fast path (analysis/prerender.py) and what the hook writes for the chapters."""

import yaml

from conftest import PROJECT


def test_project_runs_the_hook_and_reads_what_it_writes():
    cfg = yaml.safe_load((PROJECT / "_quarto.yml").read_text())
    assert cfg["project"]["pre-render"].strip() == "python -m analysis --prerender"
    assert cfg["metadata-files"] == ["_report-metadata.yml", "_parts/values.yml", "_parts/provenance.yml"]
    assert cfg["filters"] == [{"path": "analysis/values.lua", "at": "pre-ast"}] and (PROJECT / "analysis" / "values.lua").is_file()
    assert "freeze" not in cfg.get("execute", {})  # nothing to freeze: no chapter executes code


def test_prerender_fast_path_only_when_nothing_it_read_changed(tmp_path, monkeypatch):
    """The pre-render stamp matches only while the args, config bytes, env and every watched stamp are the same."""
    from analysis import prerender as freeze

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
    from analysis import prerender as freeze

    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "a.toml"
    cfg.write_text('[output]\ndir = "."\n')
    fresh = tmp_path / "fresh.tsv"
    fresh.write_text("x\n")  # written just now: it could change again within the same time stamp
    assert not freeze.record_prerender([str(cfg), None], cfg, [fresh], [], "s")
    assert freeze.prerender_is_current([str(cfg), None], cfg) is None


def test_second_prerender_skips_the_python_stack(sim_results, sim_config_path, tmp_path):
    """After a complete pre-render with nothing changed, the hook imports neither numpy nor pandas, nor the
    pydantic models of the config (analysis.configfile finds the config file without them)."""
    import os
    import shutil
    import subprocess
    import sys

    driver = ("import sys; import analysis.prerender as f; f._RACY_NS = 0; from analysis.__main__ import main; "
              "rc = main(sys.argv[1:]); heavy = ('pandas', 'numpy', 'pydantic', 'analysis.config'); "
              "print('heavy' if any(m in sys.modules for m in heavy) else 'light'); sys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    env.pop("ANALYSIS_CONFIG", None)
    runs = [subprocess.run([sys.executable, "-c", driver, "--prerender", "--config", str(sim_config_path)],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr[-2000:]
    first, second = (r.stdout.strip().splitlines() for r in runs)
    assert first[-1] == "heavy" and second[-1] == "light"
    assert first[:-1] == second[:-1] and "contrast" in second[0]  # the same summary line
    assert (tmp_path / "_report-metadata.yml").exists()
    parts = sorted((tmp_path / "_parts").rglob("*.md"))
    assert len(parts) > 40 and (tmp_path / "_parts" / "values.yml").is_file()
    shutil.rmtree(tmp_path / "_parts" / "results")  # a part deleted: the full path writes it again
    (tmp_path / "_parts" / "provenance.yml").unlink()
    third = subprocess.run([sys.executable, "-c", driver, "--prerender", "--config", str(sim_config_path)],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert third.stdout.strip().endswith("heavy") and sorted((tmp_path / "_parts").rglob("*.md")) == parts
    fourth = subprocess.run([sys.executable, "-c", driver, "--prerender", "--config", str(sim_config_path)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert fourth.stdout.strip().endswith("light")
    (tmp_path / "_parts" / "provenance.yml").unlink()  # the fast path writes the rendering's provenance
    fifth = subprocess.run([sys.executable, "-c", driver, "--prerender", "--config", str(sim_config_path)],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert fifth.stdout.strip().endswith("light")
    prov = yaml.safe_load((tmp_path / "_parts" / "provenance.yml").read_text(encoding="utf-8"))["provenance"]
    assert set(prov) == {"commit", "render_date", "quarto", "platform", "python"}
