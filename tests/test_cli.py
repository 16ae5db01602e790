"""The command line: ``fmri-report run|check|redraw|render`` and the flags of ``python -m analysis``."""

from __future__ import annotations

import ast
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import PROJECT, write_config
from analysis import __version__, pipeline
from analysis.__main__ import build_parser, main
from analysis.config import DATASETS, Config

ENV = {**os.environ, "PYTHONPATH": str(PROJECT)}


def _main(*args) -> tuple[int, str, str]:
    """The CLI in this process: exit code (argparse's SystemExit too), stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def _one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    return lines[0]


def _bad_config(tmp_path) -> Path:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f'[data]\ndataset = "simulated"\n[output]\ndir = "{tmp_path / "out"}"\n[glm]\nt_r = "7"\n')
    return cfg


def _fake_results(tmp_path):
    primary = SimpleNamespace(label="FDR q < 0.05", n_pos=3, n_neg=1)
    contrast = SimpleNamespace(name="listening", primary=primary, peaks=lambda: [1, 2])
    return SimpleNamespace(dataset=SimpleNamespace(dataset="simulated", fallback_reason="", is_simulated=True),
                           contrast=lambda name=None: contrast, path=lambda rel: tmp_path / rel)


# ----------------------------------------------------------------------------- --version, the console script

def test_version_prints_the_package_version():
    code, out, _ = _main("--version")
    assert code == 0 and out.strip() == f"analysis {__version__}"
    proc = subprocess.run([sys.executable, "-m", "analysis", "--version"], capture_output=True, text=True, env=ENV,
                          cwd=PROJECT, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"analysis {__version__}"


def test_console_script_is_declared_and_runs():
    scripts = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["fmri-report"] == "analysis.__main__:main"
    exe = shutil.which("fmri-report")
    if exe is None:
        pytest.skip("the package is not installed (pip install -e .)")
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 0 and __version__ in proc.stdout


def test_help_lists_the_commands():
    code, out, _ = _main("--help")
    assert code == 0 and all(c in out for c in ("run", "check", "redraw", "render"))


def test_dataset_accepts_every_dataset_the_config_accepts():
    assert set(DATASETS) == {"spm_auditory", "simulated", "bids", "statmap"}
    parser = build_parser()
    for dataset in DATASETS:
        for argv in (["--dataset", dataset], ["run", "--dataset", dataset], ["check", "--dataset", dataset]):
            assert parser.parse_args(argv).dataset == dataset
    code, _, err = _main("run", "--dataset", "nope")
    assert code == 2 and "invalid choice" in err


# ----------------------------------------------------------------------------- bad config: exit 2, one line

@pytest.mark.parametrize("argv", [["run"], ["check"], ["redraw"], [], ["--check"], ["run", "--force"]])
def test_bad_config_exits_2_with_one_line_before_any_computation(tmp_path, argv):
    cfg = _bad_config(tmp_path)
    code, out, err = _main(*argv, "--config", str(cfg), "-q")
    line = _one_line(err)
    assert code == 2 and str(cfg) in line and "glm.t_r must be a number" in line, line
    assert not (tmp_path / "out").exists()


def test_bad_config_through_the_real_entry_point(tmp_path):
    cfg = _bad_config(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "analysis", "check", "--config", str(cfg)], capture_output=True,
                          text=True, env=ENV, cwd=PROJECT, timeout=300)
    assert proc.returncode == 2 and "glm.t_r must be a number" in _one_line(proc.stderr)


def test_check_command_equals_the_check_flag(tmp_path):
    cfg = write_config(tmp_path / "out", calibration={"enabled": False}, dmn={"enabled": False})
    first = _main("check", "--config", str(cfg), "-q")
    second = _main("-q", "--config", str(cfg), "--check")
    assert first[0] == second[0] == 0 and first[1] == second[1] and first[1].startswith("ok: "), first[2]
    assert not (tmp_path / "out" / "results").exists()  # nothing fitted, nothing written


def test_usage_errors_exit_2():
    assert _main("run", "--to", "html")[0] == 2  # only render passes arguments on
    assert _main("--check", "run")[0] == 2
    assert _main("frobnicate")[0] == 2


# ----------------------------------------------------------------------------- redraw

def test_redraw_without_results_is_a_one_line_error(tmp_path):
    cfg = write_config(tmp_path / "out")
    code, _, err = _main("redraw", "--config", str(cfg), "-q")
    line = _one_line(err)
    assert code == 2 and "no results to redraw" in line, line


def test_redraw_calls_pipeline_redraw_with_the_config(tmp_path, monkeypatch):
    seen = []
    figure = tmp_path / "out" / "figures" / "a.png"
    monkeypatch.setattr(pipeline, "redraw", lambda config: seen.append(config) or [figure])
    cfg = write_config(tmp_path / "out")
    code, out, err = _main("redraw", "--config", str(cfg), "-q")
    assert code == 0, err
    assert len(seen) == 1 and isinstance(seen[0], Config) and seen[0].source == str(cfg)
    assert "redrew 1 figures" in out


# ----------------------------------------------------------------------------- render

def test_render_without_quarto_is_a_one_line_error_naming_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    cfg = write_config(tmp_path / "out")
    code, _, err = _main("render", "--config", str(cfg), "--to", "html")
    line = _one_line(err)
    assert code == 2 and "quarto not found on PATH" in line and "install Quarto" in line
    assert not (tmp_path / "out" / "results").exists()  # checked before anything is computed


def test_render_runs_the_analysis_then_quarto_with_the_arguments(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "quarto-args"
    fake = bin_dir / "quarto"
    fake.write_text(f'#!/bin/sh\necho "$ANALYSIS_CONFIG" > "{record}"\n'
                    f'for a in "$@"; do echo "$a" >> "{record}"; done\nexit 3\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)  # not the book: a plain quarto render (the book's own: test_render_incremental.py)
    calls = []
    monkeypatch.setattr(pipeline, "run", lambda config, force=False: calls.append(config) or _fake_results(tmp_path))
    cfg = write_config(tmp_path / "out")
    code, out, err = _main("render", "--config", str(cfg), "--to", "html", "--profile", "statmap", "-q")
    assert code == 3, err  # quarto's exit status
    assert len(calls) == 1 and "contrast listening" in out
    lines = record.read_text().splitlines()
    assert lines == [str(cfg.resolve()), "render", "--to", "html", "--profile", "statmap", "-q"]
    record.unlink()
    assert _main("render", "--config", str(cfg), "--", "--to", "html")[0] == 3
    assert record.read_text().splitlines()[1:] == ["render", "--to", "html"]


def test_render_with_a_bad_config_never_starts_quarto(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "quarto").write_text(f'#!/bin/sh\ntouch "{tmp_path / "started"}"\n')
    (bin_dir / "quarto").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    code, _, err = _main("render", "--config", str(_bad_config(tmp_path)))
    assert code == 2 and "glm.t_r" in _one_line(err) and not (tmp_path / "started").exists()


# ----------------------------------------------------------------------------- the module itself

def test_main_imports_no_private_names():
    tree = ast.parse((PROJECT / "analysis" / "__main__.py").read_text())
    private = [alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
               for alias in node.names if alias.name.startswith("_") and not alias.name.endswith("__")]
    assert not private, private


def test_main_parses_the_config_once(tmp_path, monkeypatch):
    import analysis.config as config_module

    calls = []
    real = config_module.read_toml
    monkeypatch.setattr(config_module, "read_toml", lambda *a, **k: calls.append(a) or real(*a, **k))
    monkeypatch.setattr(pipeline, "check", lambda config: "fine")
    cfg = write_config(tmp_path / "out")
    assert _main("check", "--config", str(cfg), "-q")[0] == 0
    assert len(calls) == 1
