"""Bad input gives one-line errors; interrupted and concurrent runs lose nothing; runs are repeatable."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import PROJECT, write_config
from analysis import data, run
from analysis.config import Config

ENV = {**os.environ, "PYTHONPATH": str(PROJECT)}


def _cli(*args, cwd=PROJECT, timeout=600):
    return subprocess.run([sys.executable, "-m", "analysis", "-q", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=ENV)


# ----------------------------------------------------------------------------- bad input

def test_corrupt_and_truncated_nifti_are_named(tmp_path, bold_img):
    garbage = tmp_path / "garbage.nii"
    garbage.write_bytes(b"this is not a NIfTI file" * 10)
    with pytest.raises(data.DataError, match=r"garbage.nii: not a readable NIfTI image"):
        data._load_nifti(str(garbage))
    good = tmp_path / "bold.nii.gz"
    nib.save(bold_img, good)
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(data.DataError, match=r"truncated.nii.gz: not a readable NIfTI image"):
        data._load_nifti(str(truncated))
    with pytest.raises(data.DataError, match="file not found"):
        data._load_nifti(str(tmp_path / "missing.nii.gz"))


def _run(bold_img, events, mask_img=None):
    return data.Run(bold_img=bold_img, events=events, t_r=7.0, dataset="simulated", space="MNI152NLin2009cAsym",
                    mask_img=mask_img, files={"bold.nii.gz": "bold.nii.gz"})


def test_nan_and_constant_voxels_are_excluded_and_counted(bold_img, events):
    arr = np.asarray(bold_img.dataobj).copy()
    arr[0, 0, 0, 5] = np.nan
    arr[1, 1, 1, :] = 100.0
    img = nib.Nifti1Image(arr, bold_img.affine, bold_img.header)
    full = nib.Nifti1Image(np.ones(img.shape[:3], np.uint8), img.affine)
    rep = data.analysis_mask(_run(img, events, full))
    m = np.asarray(rep.mask_img.dataobj)
    assert (rep.n_nonfinite, rep.n_constant) == (1, 1)
    assert m[0, 0, 0] == 0 and m[1, 1, 1] == 0 and m.sum() == m.size - 2


def test_mask_on_another_grid_is_refused(bold_img, events):
    other = nib.Nifti1Image(np.ones((7, 8, 9), np.uint8), np.diag([2.0, 2.0, 2.0, 1.0]))
    with pytest.raises(data.DataError, match="does not match the BOLD run; resample the mask"):
        data.analysis_mask(_run(bold_img, events, other))


def test_tr_in_config_must_match_header(bold_img, events):
    from analysis.stages import check_t_r as _check_t_r

    img = nib.Nifti1Image(np.asarray(bold_img.dataobj), bold_img.affine, bold_img.header.copy())
    img.header.set_zooms((3.0, 3.0, 3.0, 2.0))
    with pytest.raises(data.DataError, match=r"header says TR = 2 s but the TR from"):
        _check_t_r(_run(img, events), Config())
    with pytest.raises(data.DataError, match=r"is 7 s but glm.t_r = 2.5 s in the config"):
        _check_t_r(_run(bold_img, events), Config().replace(glm={"t_r": 2.5}))
    unitless = nib.Nifti1Image(np.asarray(bold_img.dataobj), bold_img.affine, bold_img.header.copy())
    unitless.header.set_zooms((3.0, 3.0, 3.0, 1.0))
    unitless.header.set_xyzt_units("mm", "unknown")  # pixdim[4] without a time unit: not a TR, only a warning
    assert _check_t_r(_run(unitless, events), Config()) == 0.0


@pytest.mark.parametrize("toml, message", [
    ('[glm]\nnoise_modle = "ar1"\n', "did you mean 'glm.noise_model'"),
    ('[data]\ndataset = "simulated"\n[contrasts]\nlistening = "listenning"\n', "unknown condition(s) 'listenning'"),
    ("[inference]\nalpha = -1\n", "out of range"),
])
def test_cli_prints_one_line_and_exits_nonzero(tmp_path, toml, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml + f'[output]\ndir = "{tmp_path / "out"}"\n')
    proc = _cli("--config", str(cfg))
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], proc.stderr
    assert not (tmp_path / "out" / "results").exists()  # nothing half-written


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = write_config(tmp_path / "cfg")
    text = cfg.read_text().replace(str(tmp_path / "cfg"), str(blocker / "out"))
    cfg.write_text(text)
    proc = _cli("--config", str(cfg))
    assert proc.returncode == 2 and "output folder cannot be written" in proc.stderr


# ----------------------------------------------------------------------------- nothing lost

@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("simcache")


def _config(folder, cache, **sections):
    return write_config(folder, cache_dir=cache, **sections)


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for folder in ("results", "tables", "figures", "derivatives")
            for p in sorted((out / folder).rglob("*")) if p.is_file()}


def _processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if text in cmdline and state != "Z":
                pids.append(int(entry.name))
    return pids


def test_killed_run_leaves_previous_results_intact(tmp_path, shared_cache):
    cfg = _config(tmp_path / "out", shared_cache)
    first = run(cfg)
    before = _snapshot(tmp_path / "out")
    proc = subprocess.Popen([sys.executable, "-m", "analysis", "--config", str(cfg), "--force"], cwd=PROJECT,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    seen = ""
    deadline = time.time() + 300
    while "thresholding" not in seen and time.time() < deadline:  # kill it in the middle of the work
        seen += proc.stderr.readline()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert "thresholding" in seen
    # its figure workers stop with it (they would otherwise wait for work forever)
    deadline = time.time() + 10
    while _processes_mentioning(str(cfg)) and time.time() < deadline:
        time.sleep(0.1)
    assert not _processes_mentioning(str(cfg))
    assert _snapshot(tmp_path / "out") == before
    again = run(cfg)  # the cache is consistent: a hit, nothing recomputed
    assert again.cache_key == first.cache_key
    assert _snapshot(tmp_path / "out") == before


def test_concurrent_runs_do_not_corrupt_the_cache(tmp_path, shared_cache):
    cfg = _config(tmp_path / "out", shared_cache)
    procs = [subprocess.Popen([sys.executable, "-m", "analysis", "-q", "--config", str(cfg), "--force"],
                              cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
             for _ in range(2)]
    codes = [p.wait(timeout=600) for p in procs]
    assert codes == [0, 0], [p.stderr.read() for p in procs]
    res = run(cfg)  # valid cache, complete outputs
    assert all(res.path(f).exists() for f in res.figures.values())
    assert not list((tmp_path / "out").glob(".analysis-stage-*")) and not list((tmp_path / "out").glob(".analysis-old-*"))


# ----------------------------------------------------------------------------- repeatable

def test_same_config_gives_byte_identical_outputs(tmp_path, shared_cache):
    cfg = _config(tmp_path / "out", shared_cache)
    run(cfg)
    first = _snapshot(tmp_path / "out")
    run(cfg, force=True)
    second = _snapshot(tmp_path / "out")
    assert first.keys() == second.keys()
    differ = [k for k in first if first[k] != second[k]]
    assert not differ, differ


def test_cache_is_invalidated_by_config_and_input_changes_only(tmp_path, shared_cache):
    cfg = _config(tmp_path / "out", shared_cache)
    res = run(cfg)
    results_file = tmp_path / "out" / "results" / "results.json"
    stamp = results_file.stat().st_mtime_ns
    assert run(cfg).cache_key == res.cache_key and results_file.stat().st_mtime_ns == stamp  # hit
    # a config value changes -> recomputed
    cfg2 = _config(tmp_path / "out", shared_cache, inference={"cluster_threshold": 12})
    res2 = run(cfg2)
    assert res2.cache_key != res.cache_key and res2.contrast().threshold("fdr_cluster").spec.cluster_threshold == 12
    # an input file's content changes -> recomputed
    events = Path(res2.dataset.files["events.tsv"].path)
    original = events.read_bytes()
    try:
        events.write_bytes(original.replace(b"listening", b"listening", 1) + b"\n")
        res3 = run(cfg2)
        assert res3.cache_key != res2.cache_key
    finally:
        events.write_bytes(original)


def test_the_analysis_process_never_imports_matplotlib(tmp_path, shared_cache):
    """Figures are drawn by the worker processes; the analysis process names them without importing plotting."""
    cfg = _config(tmp_path / "out", shared_cache)
    code = ("import sys; from analysis import run; res = run(sys.argv[1], force=True); "
            "print(len(res.figures), 'matplotlib' in sys.modules, 'nilearn.plotting' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(cfg)], cwd=PROJECT, env={**ENV, "ANALYSIS_FIGURE_JOBS": "2"},
                         capture_output=True, text=True, timeout=600, check=True).stdout.split()
    assert int(out[0]) >= 15 and out[1:] == ["False", "False"]


@pytest.mark.parametrize("verbose", [False, True])
def test_figure_workers_library_warnings_only_with_verbose(verbose):
    """A library warning raised while a figure worker draws (forked or spawned) reaches the console only with
    ``--verbose``, as in the analysis process (``analysis.__main__._library_warnings``)."""
    code = (
        "import sys, warnings\n"
        "from analysis.__main__ import _library_warnings\n"
        "from analysis.figures.parallel import FigurePool\n"
        "_library_warnings(verbose=sys.argv[1] == 'v')\n"
        "for method in ('fork', 'spawn'):\n"
        "    with FigurePool(1, start_method=method) as pool:\n"
        "        pool.submit(warnings.warn, f'{method} worker: a library warning')\n"
        "        pool.results()\n")
    env = {k: v for k, v in ENV.items() if k != "PYTHONWARNINGS"}
    proc = subprocess.run([sys.executable, "-c", code, "v" if verbose else "q"], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for method in ("fork", "spawn"):
        assert (f"{method} worker: a library warning" in proc.stderr) == verbose, proc.stderr[-2000:]
