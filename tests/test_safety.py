"""Hostile input: nothing executed, nothing deleted, nothing injected, one-line errors before any computation."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from conftest import PROJECT, write_config
from analysis import contrasts, outputs
from analysis.__main__ import main
from analysis.contrasts import ContrastError, contrast_vector

ENV = {**os.environ, "PYTHONPATH": str(PROJECT)}
TR = 2.0
N_SCANS = 60


def _cli(*args, cwd=PROJECT, timeout=600, env=None):
    return subprocess.run([sys.executable, "-m", "analysis", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env or ENV)


def _main(*args) -> tuple[int, str]:
    """The real CLI entry point, in this process (fast): exit code and what it wrote to stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["-q", *args])
    return code, err.getvalue()


def _one_line_error(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- a small BIDS dataset

def write_bids(root: Path, events: pd.DataFrame | None = None, trial_types=("A", "B"), bold=None,
               sidecar: dict | None = None) -> Path:
    """sub-01 task-x: 60 volumes on a 6 mm MNI grid, blocks of the two conditions, A adds 3 % in the left
    temporal lobe; fMRIPrep-like (``space-MNI152NLin2009cAsym``) with a brain mask."""
    from nilearn.datasets import load_mni152_brain_mask
    from nilearn.image import resample_img

    rng = np.random.default_rng(3)
    target = np.diag([6.0, 6.0, 6.0, 1.0])
    target[:3, 3] = [-90.0, -126.0, -72.0]
    shape = (31, 37, 31)
    brain = resample_img(load_mni152_brain_mask(resolution=2), target_affine=target, target_shape=shape,
                         interpolation="nearest", copy_header=True, force_resample=True)
    mask = np.asarray(brain.dataobj) > 0
    if events is None:
        onsets = np.arange(6, N_SCANS * TR - 20, 24.0)
        a, b = trial_types
        events = pd.DataFrame({"onset": np.concatenate([onsets, onsets + 12]), "duration": 12.0,
                               "trial_type": [a] * len(onsets) + [b] * len(onsets)}).sort_values("onset")
    if bold is None:
        xyz = nib.affines.apply_affine(target, np.indices(shape).reshape(3, -1).T).reshape(shape + (3,))
        sphere = (np.linalg.norm(xyz - np.array([-54.0, -24.0, 6.0]), axis=-1) <= 12) & mask
        t = np.arange(N_SCANS) * TR
        reg = np.zeros(N_SCANS)
        for on in np.arange(6, N_SCANS * TR - 20, 24.0):
            reg[(t >= on + 4) & (t < on + 16)] = 1.0
        data = np.where(mask[..., None], 800.0, 0.0) * (1 + 0.03 * sphere[..., None] * reg)
        data = data + rng.standard_normal(shape + (N_SCANS,)) * 10.0 * mask[..., None]
        bold = nib.Nifti1Image(data.astype(np.float32), target)
        bold.header.set_xyzt_units("mm", "sec")
        bold.header.set_zooms((6.0, 6.0, 6.0, TR))
    func = root / "derivatives" / "fmriprep" / "sub-01" / "func"
    func.mkdir(parents=True, exist_ok=True)
    (root / "sub-01" / "func").mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.8.0"}))
    (root / "task-x_bold.json").write_text(json.dumps(sidecar if sidecar is not None else {"RepetitionTime": TR}))
    ent = "sub-01_task-x"
    nib.save(bold, root / "sub-01" / "func" / f"{ent}_bold.nii.gz")
    nib.save(bold, func / f"{ent}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz")
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), target), func / f"{ent}_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz")
    events_path = root / "sub-01" / "func" / f"{ent}_events.tsv"
    if isinstance(events, (bytes, str)):
        events_path.write_bytes(events if isinstance(events, bytes) else events.encode())
    else:
        events.to_csv(events_path, sep="\t", index=False)
    return root


def bids_config(folder: Path, root: Path, contrasts_: dict[str, str] | None = None, extra: str = "",
                full: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cons = contrasts_ or {"AvsB": "A - B"}
    lines = ["[data]", 'dataset = "bids"', "", "[bids]", f"root = {json.dumps(str(root))}", 'subject = "01"',
             'task = "x"', 'space = "MNI152NLin2009cAsym"', "", "[contrasts]"]
    lines += [f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in cons.items()]
    if not full:
        lines += ["", "[calibration]", "enabled = false", "", "[dmn]", "enabled = false"]
    lines += ["", "[output]", f"dir = {json.dumps(str(folder))}", "", extra]
    path = folder / "analysis.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def bids_root(tmp_path_factory):
    return write_bids(tmp_path_factory.mktemp("bids"))


# ----------------------------------------------------------------------------- 1. contrasts never run code

def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalpha() else c for c in text)


def _octal(text: str) -> str:
    return "".join(f"\\{ord(c):o}" for c in text)


def test_fullwidth_at_and_octal_contrast_never_runs(tmp_path, bids_root):
    """The exploit of the issue: full-width identifiers (NFKC-folded by Python), ``@`` names and octal escapes."""
    sentinel = tmp_path / "pwned"
    cmd = _octal(f"touch {sentinel}")
    attacks = {
        "fullwidth": f"A - B + 0 * {_fullwidth('__import__')}('{_octal('os')}').{_fullwidth('system')}('{cmd}')",
        "at_name": f"A - B + 0 * @{_fullwidth('os')}.{_fullwidth('system')}('{cmd}')",
        "fullwidth_plain": _fullwidth("A") + " - B",
    }
    for name, expr in attacks.items():
        cfg = bids_config(tmp_path / name, bids_root, {"c": expr})
        proc = _cli("--config", str(cfg))
        assert proc.returncode == 2, proc.stderr
        line = _one_line_error(proc.stderr)
        assert "contrast 'c'" in line and str(cfg) in line
        assert not sentinel.exists()
        assert not (tmp_path / name / "results").exists()


@pytest.mark.parametrize("expr", [
    "A - B + 0 * __import__('os').system('touch SENTINEL')",
    "A - B + 0 * (lambda: __import__('os').system('touch SENTINEL'))()",
    "A - B + 0 * A.__class__.__init__.__globals__['os'].system('touch SENTINEL')",
    "A - B + 0 * @os.system('touch SENTINEL')",
    "A - B + 0 * @pd.io.common.os.system('touch SENTINEL')",
])
def test_code_in_a_contrast_is_refused_by_the_cli(tmp_path, bids_root, expr):
    sentinel = tmp_path / "pwned"
    cfg = bids_config(tmp_path / "out", bids_root, {"c": expr.replace("SENTINEL", str(sentinel))})
    code, err = _main("--config", str(cfg))
    assert code == 2 and "contrast 'c'" in _one_line_error(err)
    assert not sentinel.exists() and not (tmp_path / "out" / "results").exists()


@pytest.mark.parametrize("expr", [
    "__import__('os').system('touch SENTINEL')", "(lambda: __import__('os'))()", "A.real", "A.__class__",
    "@A", "A @ B", "A if B else A", "[A][0]", "A[0]", "f'{A}'", "A and B", "A < B", "A ** 2", "A % 2", "A // 2",
    "A * B", "A / B", "A / 0", "A / (1 - 1)", "1e400 * A", "True * A", "None", "...", "2", "A +", "A; B",
    "A\nB", "b'A'", "1j * A", "ＡＢ", "𝐀 - B", "A - '\\x41\\x42'", "(" * 300 + "A" + ")" * 300, "A" + " + A" * 1500,
])
def test_contrast_grammar_refuses_everything_but_linear_sums(expr, tmp_path):
    with pytest.raises(ContrastError):
        contrast_vector(expr.replace("SENTINEL", str(tmp_path / "x")), ["A", "B", "constant"], "c")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("expr", ["A", "A - B", "0.5 * (A + B) - constant", "(A + B) / 2", "-A + 2*B", "A - 0.25*B",
                                  "+A", "2 * (3 * A)"])
def test_contrast_weights_equal_nilearn_on_benign_formulas(expr):
    from nilearn.glm.contrasts import expression_to_contrast_vector

    cols = ["A", "B", "constant"]
    assert np.allclose(contrast_vector(expr, cols), expression_to_contrast_vector(expr, cols))


def test_quoted_condition_names_with_spaces_and_unicode():
    cols = ["left hand", "Fußball", "constant"]
    assert list(contrast_vector("'left hand' - \"Fußball\"", cols)) == [1.0, -1.0, 0.0]
    assert contrasts.needs_quotes("left hand") and not contrasts.needs_quotes("A_1")
    with pytest.raises(ContrastError, match="unknown condition"):
        contrast_vector("'left  hand'", cols)


def test_nilearn_receives_numbers_never_strings(monkeypatch, bids_root, tmp_path):
    """No contrast string reaches ``pandas.DataFrame.eval`` (where nilearn's string contrasts run) during a run."""
    import nilearn.glm.contrasts
    from nilearn.glm.first_level import FirstLevelModel

    evaluated, seen = [], []
    monkeypatch.setattr(pd.DataFrame, "eval", lambda self, expr, *a, **k: evaluated.append(expr))
    monkeypatch.setattr(nilearn.glm.contrasts, "expression_to_contrast_vector",
                        lambda expr, *a, **k: evaluated.append(expr))
    original = FirstLevelModel.compute_contrast

    def spy(self, contrast_def, *args, **kwargs):
        seen.append(contrast_def)
        return original(self, contrast_def, *args, **kwargs)

    monkeypatch.setattr(FirstLevelModel, "compute_contrast", spy)
    from analysis import run

    res = run(bids_config(tmp_path / "out", bids_root, {"AvsB": "A - B", "A": "A"}, full=True))
    assert res.contrast("AvsB").z_max > 4  # the run really happened (the planted effect is there)
    assert not evaluated and not any(isinstance(c, str) for c in seen)


# ----------------------------------------------------------------------------- 2. the user's folders

def test_user_files_in_output_folders_survive(tmp_path, bids_root):
    out = tmp_path / "thesis"
    for folder in ("results", "figures"):
        (out / folder).mkdir(parents=True)
    (out / "results" / "chapter3.docx").write_bytes(b"my thesis")
    (out / "figures" / "fig1.png").write_bytes(b"my figure")
    cfg = bids_config(out, bids_root)
    before = _tree(out)
    proc = _cli("--config", str(cfg))
    assert proc.returncode == 2
    line = _one_line_error(proc.stderr)
    assert "not written by this project" in line and "output.dir" in line
    assert _tree(out) == before  # nothing deleted, nothing written
    assert not list(out.glob(".analysis-*"))


def test_outputs_of_a_version_without_manifest_are_named_as_such(tmp_path, bids_root):
    out = tmp_path / "old"
    for folder in ("results", "figures"):
        (out / folder).mkdir(parents=True)
    (out / "results" / "results.json").write_text("{}")
    (out / "figures" / "contrast-listening_desc-glass_statmap.png").write_bytes(b"old figure")
    before = _tree(out)
    code, err = _main("--config", str(bids_config(out, bids_root)))
    line = _one_line_error(err)
    assert code == 2 and "outputs of an older version of this project" in line and "output.dir" in line
    assert _tree(out) == {**before, "analysis.toml": (out / "analysis.toml").read_bytes()}


def test_edited_output_file_is_not_replaced(tmp_path, bids_root):
    out = tmp_path / "out"
    cfg = bids_config(out, bids_root)
    assert _cli("--config", str(cfg)).returncode == 0
    table = next((out / "tables").glob("*clusters.tsv"))
    table.write_text(table.read_text() + "my note\n")
    proc = _cli("--config", str(cfg), "--force")
    assert proc.returncode == 2 and "changed since this project wrote it" in _one_line_error(proc.stderr)
    assert table.read_text().endswith("my note\n")


@pytest.mark.parametrize("where", ["/", "~", "analysis", "chapters/x"])
def test_dangerous_output_dirs_are_refused_before_any_computation(tmp_path, where):
    target = {"/": "/", "~": str(Path.home()), "analysis": str(PROJECT / "analysis"),
              "chapters/x": str(PROJECT / "chapters" / "x")}[where]
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\ndataset = "simulated"\n[output]\ndir = {json.dumps(target)}\n')
    code, err = _main("--config", str(cfg))
    assert code == 2 and "output.dir" in _one_line_error(err)
    assert not (Path(target) / "results").exists() or where in ("~",)
    assert not (PROJECT / "chapters" / "x").exists()


def test_cache_inside_an_output_folder_is_refused(tmp_path):
    cfg = write_config(tmp_path / "out", cache_dir=tmp_path / "out" / "figures" / "cache")
    code, err = _main("--config", str(cfg))
    assert code == 2 and "output.cache_dir lies inside" in _one_line_error(err)
    assert not (tmp_path / "out" / "figures").exists()


def test_cache_on_another_file_system_works(tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second file system here")
    cache = shm / f"analysis-test-cache-{os.getpid()}"
    try:
        cfg = write_config(tmp_path / "out", cache_dir=cache, calibration={"enabled": False}, dmn={"enabled": False})
        proc = _cli("--config", str(cfg))
        assert proc.returncode == 0, proc.stderr
        assert outputs.verify(tmp_path / "out")
    finally:
        shutil.rmtree(cache, ignore_errors=True)


# ----------------------------------------------------------------------------- 3. all-or-nothing publishing

_KILLER = textwrap.dedent("""
    import os, shutil, signal, sys
    from pathlib import Path
    stage, out, kill_at = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    count = [0]
    def counted(fn):
        def wrapper(*a, **k):
            count[0] += 1
            if count[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*a, **k)
        return wrapper
    os.replace, os.rename, os.mkdir, shutil.rmtree = (counted(os.replace), counted(os.rename), counted(os.mkdir),
                                                      counted(shutil.rmtree))
    Path.write_text, Path.mkdir, Path.unlink = counted(Path.write_text), counted(Path.mkdir), counted(Path.unlink)
    from analysis import outputs
    outputs.publish(stage, out)
    print(count[0])
""")


def _generation(out: Path, tag: str) -> Path:
    stage = outputs.new_stage(out)
    for folder in ("figures", "tables", "derivatives", "results"):
        (stage / folder / f"{folder}.txt").write_text(f"{tag} {folder}\n")
    (stage / "results" / "results.json").write_text(json.dumps({"generation": tag}))
    outputs.write_manifest(stage)
    return stage


def test_publishing_killed_at_every_file_operation_never_serves_a_mix(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    outputs.publish(_generation(base, "old"), base)
    old = _tree(base)
    n, killed = 0, 0
    while True:
        n += 1
        out = tmp_path / f"kill{n}"
        shutil.copytree(base, out)
        stage = _generation(out, "new")
        new = {k: v for k, v in _tree(stage).items() if not k.startswith(".written")}
        proc = subprocess.run([sys.executable, "-c", _KILLER, str(stage), str(out), str(n)], env=ENV,
                              capture_output=True, text=True, timeout=60)
        outputs.check_owned(out)  # whatever happened, a later run may replace everything there
        visible = {k: v for k, v in _tree(out).items() if k.split("/")[0] in outputs.OUTPUT_FOLDERS}
        if outputs.verify(out):  # served: exactly one complete generation
            assert visible in ({k: v for k, v in old.items() if k.split("/")[0] in outputs.OUTPUT_FOLDERS},
                               new), f"mix served after a kill at operation {n}"
        if proc.returncode == 0:
            assert outputs.verify(out) and visible == new
            break
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        killed += 1
        outputs.remove_stale(out)
        assert not list(out.glob(".analysis-stage-*")) and not list(out.glob(".analysis-old-*"))
    print(f"\npublishing killed at each of {killed} file operations; never a mix served")
    assert killed >= 8  # every rename and write of the publishing step was a kill point


def test_a_tampered_output_is_recomputed_not_served(tmp_path, bids_root):
    out = tmp_path / "out"
    cfg = bids_config(out, bids_root)
    assert _cli("--config", str(cfg)).returncode == 0
    fig = next((out / "figures").glob("*.png"))
    original = fig.read_bytes()
    fig.write_bytes(original[:100])  # as if a crash had left another generation's file here
    assert not outputs.verify(out)
    outputs_ledger = json.loads((out / outputs.LEDGER).read_text())
    outputs_ledger["files"][fig.relative_to(out).as_posix()].append(outputs.file_sha256(fig))  # pretend it is ours
    (out / outputs.LEDGER).write_text(json.dumps(outputs_ledger))
    proc = _cli("--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert "up to date" not in proc.stderr and fig.read_bytes() == original


# ----------------------------------------------------------------------------- 4. NaN and inf voxels

def test_nan_and_inf_voxels_complete_and_are_counted(tmp_path):
    root = write_bids(tmp_path / "clean")
    img = nib.load(next(root.rglob("*desc-preproc_bold.nii.gz")))
    data = np.asarray(img.dataobj, dtype=np.float32).copy()
    data[15, 18, 15, 3] = np.nan
    data[16, 18, 15, 10:12] = np.inf
    data[15, 19, 15, 20] = -np.inf
    bold = nib.Nifti1Image(data, img.affine, img.header)
    root = write_bids(tmp_path / "nan", bold=bold)
    cfg = bids_config(tmp_path / "out", root, full=True)  # calibration and DMN steps too
    proc = _cli("--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    from analysis import load_results, report

    res = load_results(cfg)
    assert res.model.n_excluded_nonfinite == 3
    assert "3 voxels with non-finite values" in report.methods(res)
    json.loads((tmp_path / "out" / "results" / "results.json").read_text())  # strict JSON


# ----------------------------------------------------------------------------- 5. inputs refused with one line

def _events_case(tmp_path, content):
    root = write_bids(tmp_path / "bids", events=content)
    return bids_config(tmp_path / "out", root)


@pytest.mark.parametrize("content, message", [
    (b"", "the events file is empty"),
    (b"onset\tduration\ttrial_type\n6\t12\tA\n30\t12\t\n", "trial_type is empty or n/a on line(s) 3"),
    (b"onset\tduration\ttrial_type\n6\t12\tA\n30\t12\tn/a\n", "trial_type is empty or n/a on line(s) 3"),
    (b"onset\tduration\ttrial_type\n6\t12\tA\n30\t12\tconstant\n", "'constant' is also the name of a design-matrix"),
    (b"onset\tduration\ttrial_type\n6\t12\tA\n30\t12\tdrift_1\n", "'drift_1' is also the name of a design-matrix"),
    ("onset\tduration\ttrial_type\n6\t12\tA\n30\t12\tB\xe9\n".encode("latin-1"), "is not UTF-8 text"),
    (b"onset\tduration\ttrial_type\n6\t12\tA\n6\t12\tA\n30\t12\tB\n", "line(s) 3 repeat an earlier event exactly"),
    (b"onset\tduration\ttrial_type\n6\t12\tA\n30\tinf\tB\n", "onset and duration must be numbers"),
    (b"onset\tduration\ttrial_type\n6\t12\tA\n30\t12\tB`x\n", "holds a quote, backtick"),
])
def test_bad_events_give_one_line_naming_the_file(tmp_path, content, message):
    cfg = _events_case(tmp_path, content)
    code, err = _main("--config", str(cfg))
    line = _one_line_error(err)
    assert code == 2 and message in line and "events.tsv" in line, line
    assert not (tmp_path / "out" / "results").exists()


@pytest.mark.parametrize("sidecar, message", [
    ({"RepetitionTime": [2.0]}, "RepetitionTime is [2.0], not a number of seconds; fix the sidecar"),
    ({"RepetitionTime": 1000}, "RepetitionTime = 1000 s is not a plausible TR"),
    ({"RepetitionTime": "2"}, "not a number of seconds"),
    ([1, 2], "must hold an object"),
])
def test_bad_sidecar_tr_names_the_sidecar(tmp_path, sidecar, message):
    root = write_bids(tmp_path / "bids", sidecar=sidecar)
    code, err = _main("--config", str(bids_config(tmp_path / "out", root)))
    line = _one_line_error(err)
    assert code == 2 and message in line and "task-x_bold.json" in line, line


def test_negative_header_tr_names_the_header(tmp_path):
    root = write_bids(tmp_path / "clean")
    img = nib.load(next(root.rglob("*desc-preproc_bold.nii.gz")))
    bold = nib.Nifti1Image(np.asarray(img.dataobj), img.affine)
    bold.header.set_zooms((6.0, 6.0, 6.0, 2.0))
    bold.header["pixdim"][4] = -7.0  # as a broken converter writes it (nibabel's set_zooms refuses it)
    root = write_bids(tmp_path / "neg", bold=bold, sidecar={})
    code, err = _main("--config", str(bids_config(tmp_path / "out", root)))
    line = _one_line_error(err)
    assert code == 2 and "TR (pixdim[4]) = -7 s is not a plausible TR" in line


@pytest.mark.parametrize("kind", ["singular", "nan"])
def test_singular_or_nan_affine_is_refused(tmp_path, kind):
    root = write_bids(tmp_path / "clean")
    img = nib.load(next(root.rglob("*desc-preproc_bold.nii.gz")))
    affine = img.affine.copy()
    if kind == "singular":
        affine[0, :3] = 0
    else:
        affine[1, 1] = np.nan
    hdr = img.header.copy()  # written field by field: nibabel refuses to build such an affine itself
    hdr["qform_code"], hdr["sform_code"] = 0, 1
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = affine[0], affine[1], affine[2]
    bold = nib.Nifti1Image(np.asarray(img.dataobj), None, hdr)
    root = write_bids(tmp_path / kind, bold=bold)
    code, err = _main("--config", str(bids_config(tmp_path / "out", root)))
    line = _one_line_error(err)
    assert code == 2 and "affine" in line and ("singular" in line or "not finite" in line)


def test_left_right_flipped_qform_is_refused(tmp_path):
    root = write_bids(tmp_path / "clean")
    img = nib.load(next(root.rglob("*desc-preproc_bold.nii.gz")))
    flipped = img.affine.copy()
    flipped[0, 0] *= -1  # the qform says the first axis runs right to left, the sform left to right
    bold = nib.Nifti1Image(np.asarray(img.dataobj), img.affine)
    bold.set_qform(flipped, code=1)
    bold.set_sform(img.affine, code=1)
    bold.header.set_zooms((6.0, 6.0, 6.0, TR))
    root = write_bids(tmp_path / "flip", bold=bold)
    code, err = _main("--config", str(bids_config(tmp_path / "out", root)))
    line = _one_line_error(err)
    assert code == 2 and "qform (LAS) and sform (RAS) disagree" in line


@pytest.mark.parametrize("toml, message", [
    ("[glm]\nt_r = nan", "glm.t_r = nan is out of range"),
    ("[inference]\nalpha = nan", "inference.alpha = nan is out of range"),
    ("[inference]\nz_threshold = inf", "inference.z_threshold = inf is out of range"),
    ("[simulation]\nrho = nan", "simulation.rho = nan is out of range"),
    ("[statmap]\ndof = nan", "statmap.dof = nan is out of range"),
    ("[contrasts]\nlistening = \"listening / 0\"", "divides by zero"),
    ("[contrasts]\nlisten_ing = \"listening\"\nlistenIng = \"listening\"", "would both be saved as contrast-listenIng"),
    ("[report]\ntitle = \"x\"\n[[report.authors]]\nname = \"A\"\norcid = \"0000-0000-0000-0000\"", "ORCID"),
    ("[report]\ntitle = 3", "report.title must be a string"),
    ("[bids]\nsubject = \"../../etc\"", "bids.subject"),
])
def test_bad_config_values_fail_before_any_computation(tmp_path, toml, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\ndataset = "simulated"\n[output]\ndir = "{tmp_path / "out"}"\n{toml}\n')
    code, err = _main("--config", str(cfg))
    line = _one_line_error(err)
    assert code == 2 and message in line and str(cfg) in line, line
    assert not (tmp_path / "out").exists()


def test_bad_report_metadata_under_prerender_leaves_outputs_alone(tmp_path):
    cfg = write_config(tmp_path / "out", calibration={"enabled": False}, dmn={"enabled": False})
    assert _cli("--config", str(cfg)).returncode == 0
    before = _tree(tmp_path / "out")
    cfg.write_text(cfg.read_text() + '\n[report]\ntitle = "x"\n[[report.authors]]\nname = "A"\nemail = "<x>"\n')
    proc = _cli("--config", str(cfg), "--prerender", "--force", cwd=tmp_path)
    assert proc.returncode == 2 and "e-mail" in _one_line_error(proc.stderr)
    assert _tree(tmp_path / "out") == {**before, "analysis.toml": cfg.read_bytes()}


def _statmap_config(tmp_path, img) -> Path:
    nib.save(img, tmp_path / "map.nii.gz")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\ndataset = "statmap"\n[statmap]\npath = "{tmp_path / "map.nii.gz"}"\n'
                   f'[output]\ndir = "{tmp_path / "out"}"\n')
    return cfg


@pytest.mark.parametrize("kind, message", [("zero", "no non-zero finite value"), ("nan", "no non-zero finite value"),
                                           ("mask", "so it is a mask, not a statistical map")])
def test_statmaps_that_are_not_maps_are_named(tmp_path, kind, message):
    from nilearn.datasets import load_mni152_brain_mask

    brain = load_mni152_brain_mask(resolution=2)
    m = np.asarray(brain.dataobj, dtype=np.float32)
    data = {"zero": np.zeros_like(m), "nan": np.full_like(m, np.nan), "mask": m}[kind]
    code, err = _main("--config", str(_statmap_config(tmp_path, nib.Nifti1Image(data, brain.affine))))
    line = _one_line_error(err)
    assert code == 2 and message in line and "map.nii.gz" in line


# ----------------------------------------------------------------------------- 6. no injection

INJECT = "<script>alert(1)</script>"


def test_user_text_is_escaped_in_generated_markdown():
    from analysis import text

    for s in [INJECT, "{{< meta title >}}", "[x](javascript:alert(1))", "a >}} b", "::: {.callout}", "`x`", "@key"]:
        e = text.md_escape(s)
        assert "<script" not in e.replace("\\<", "") and "{{" not in e and "}}" not in e and "](" not in e.replace("\\](", "")
        assert ":::" not in e and "`" not in e.replace("\\`", "") and "@" not in e.replace("\\@", "")
    env_out = text.environment().from_string("{{ name }} and {{ name | code }}").render(name=INJECT + "`")
    first, second = env_out.split(" and ")
    assert first == "\\<script>alert(1)\\</script>\\`" and second.startswith("`` ") and second.endswith(" ``")


def test_condition_names_and_report_fields_stay_literal_in_generated_text(tmp_path):
    root = write_bids(tmp_path / "bids", trial_types=(INJECT, "B {{< meta title >}}"))
    cfg = bids_config(tmp_path / "out", root, {"c": f"'{INJECT}' - 'B {{{{< meta title >}}}}'"})
    proc = _cli("--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    from analysis import load_results, pages

    res = load_results(cfg)
    parts, values = pages.chapter_parts(res, tmp_path), pages.chapter_values(res)
    # everything the chapters include and cite: prose, tables (the events table too), captions' values
    # (not the viewer, a raw HTML block nilearn writes, nor the config, shown in a code block: both are literal)
    prose = "\n".join([*(b for p in parts.values() for k, b in p.items() if k not in ("fig-viewer", "config")),
                        *(v for vs in values.values() for v in vs.values())])
    assert "tbl-events" in parts["data"] and values["results"]["contrast"] == "c"
    assert INJECT not in prose and "\\<script>alert(1)\\</script>" in prose and "{{<" not in prose


# ----------------------------------------------------------------------------- 7. the contract, generated

def test_check_command_validates_without_fitting(tmp_path, bids_root):
    cfg = bids_config(tmp_path / "out", bids_root)
    proc = _cli("--config", str(cfg), "--check")
    assert proc.returncode == 0 and proc.stdout.startswith("ok: bids: 60 volumes"), proc.stderr
    assert not (tmp_path / "out" / "results").exists()


# ----------------------------------------------------------------------------- 8. property-based contract

from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

HOSTILE_TEXT = st.one_of(
    st.text(max_size=24),
    st.sampled_from(["", " ", "n/a", "constant", "drift_1", INJECT, "{{< meta title >}}", "a >}} b", "[x](javascript:1)",
                     "`x`", "$x$", "@key", "::: {.x}", "# h", "A\tB", "A\nB", "ｌｉｓｔｅｎ", "Fußball", "left hand",
                     "A_derivative", "a" * 200, "trans_x", "\x00", "\u202e", "1e400", "-0", "../../etc/passwd"]),
)
NUMBER = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**15, 10**15),
                   st.sampled_from([0, -1, 0.0, 1e-300, 7, 2.0]))
VALUE = st.one_of(NUMBER, HOSTILE_TEXT, st.booleans(), st.lists(HOSTILE_TEXT, max_size=3))
KEYS = ["glm.t_r", "glm.hrf_model", "glm.noise_model", "glm.high_pass", "glm.smoothing_fwhm", "glm.rho_fwhm",
        "inference.alpha", "inference.fpr_alpha", "inference.z_threshold", "inference.cluster_threshold",
        "inference.primary", "inference.two_sided", "simulation.rho", "statmap.dof", "dmn.node_radius",
        "calibration.n_null", "data.seed", "bids.run", "bids.confounds", "output.cache_dir", "glm.noise_modle",
        "report.title", "report.abstract", "report.keywords"]
CONTRAST = st.one_of(
    st.sampled_from(["A - B", "A", "0.5 * (A + B)", "'A' - B", "A / 0", "A * B", "__import__('os')", "A.real",
                     "@A", "ＡＢ", "A - constant", "(A + B) / 2", "A +", "'B' - 'C'"]),
    st.text(alphabet=st.sampled_from(list("AB()+-*/ .'\"@_01ｌ[]{}<>")), max_size=20),
)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == float("inf") else "-inf" if v == float("-inf") else repr(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(v, ensure_ascii=True)


@st.composite
def hostile_case(draw):
    sections: dict[str, dict[str, object]] = {}
    keys = draw(st.one_of(st.just([]), st.lists(st.sampled_from(KEYS), max_size=2, unique=True)))
    for key in keys:
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = draw(VALUE)
    cons = draw(st.one_of(st.just({"AvsB": "A - B"}), st.dictionaries(
        st.sampled_from(["c", "d", "AvsB", "x_y", "xY"]), CONTRAST, min_size=1, max_size=2)))
    valid = [(6, 12, "A"), (30, 12, "B"), (54, 12, "A"), (78, 12, "B")]
    n = draw(st.integers(0, 4))
    hostile = [(draw(st.one_of(NUMBER, HOSTILE_TEXT, st.sampled_from([6, 30, 54, 78, 200]))),
                draw(st.one_of(NUMBER, st.just(12))),
                draw(st.one_of(HOSTILE_TEXT, st.sampled_from(["A", "B"])))) for _ in range(n)]
    rows = valid[:draw(st.integers(0, 4))] + hostile
    raw = draw(st.one_of(st.none(), st.none(), st.binary(max_size=40)))
    return sections, cons, rows, raw


@pytest.fixture(scope="module")
def property_root(tmp_path_factory):
    return write_bids(tmp_path_factory.mktemp("prop"))


@settings(max_examples=300, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=hostile_case())
def test_cli_contract_on_generated_configs_and_events(tmp_path_factory, property_root, case):
    """Exit 0, or exit 2 with one line starting "error:" that names a file or key; no traceback; the output
    folder unchanged (it holds a user's file that must survive)."""
    sections, cons, rows, raw = case
    events_path = property_root / "sub-01" / "func" / "sub-01_task-x_events.tsv"
    if raw is not None:
        events_path.write_bytes(raw)
    else:
        pd.DataFrame(rows, columns=["onset", "duration", "trial_type"]).to_csv(events_path, sep="\t", index=False)
    out = tmp_path_factory.mktemp("propout")
    (out / "mine.txt").write_text("user file")  # beside the output folders (inside them: another test)
    cfg = bids_config(out, property_root, {"AvsB": "A - B"})
    text_ = cfg.read_text(encoding="utf-8")
    text_ = text_.replace('[contrasts]\nAvsB = "A - B"', "[contrasts]\n" + "\n".join(
        f"{k} = {json.dumps(v, ensure_ascii=True)}" for k, v in cons.items()))
    for section, values in sections.items():
        body = "\n".join(f"{k} = {_toml_value(v)}" for k, v in values.items())
        text_ += f"\n[{section}]\n{body}\n" if f"[{section}]" not in text_ else ""
        if f"[{section}]\n{body}" not in text_:
            text_ = text_.replace(f"[{section}]\n", f"[{section}]\n{body}\n", 1)
    cfg.write_text(text_, encoding="utf-8")
    before = _tree(out)
    code, err = _main("--config", str(cfg), "--check")
    assert code in (0, 2), err
    event(f"exit {code}: " + (re.sub(r"/\S+", "<path>", err)[7:50] if code else "ok"))
    if code == 2:
        line = _one_line_error(err)
        assert str(cfg) in line or str(property_root) in line or str(out) in line, line
    else:
        assert not err.strip(), err
    assert _tree(out) == before


# ----------------------------------------------------------------------------- 9. the rendered HTML

class _Tags(HTMLParser):
    """The elements of a page that user text must never become: scripts, bold text, javascript: links."""

    def __init__(self):
        super().__init__()
        self.scripts, self.bold, self.js_links, self._in = [], "", [], None

    def handle_starttag(self, tag, attrs):
        self._in = tag
        if tag == "script":
            self.scripts.append("")
        self.js_links += [v for k, v in attrs if k in ("href", "src") and v and v.strip().lower().startswith("javascript")]

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in == "script":
            self.scripts[-1] += data
        elif self._in in ("b", "strong"):
            self.bold += data


def test_script_in_condition_names_and_report_fields_is_literal_in_rendered_html(tmp_path):
    """A real ``quarto render --to html``: user text shows as text, never as a tag, shortcode or link."""
    import rendered

    quarto = rendered.quarto_command()
    root = write_bids(tmp_path / "bids", trial_types=(INJECT, "B {{< meta title >}}"))
    project = rendered.copy_sources(tmp_path / "project")
    report_table = textwrap.dedent(f"""
        [report]
        title = {json.dumps(INJECT + " {{< pagebreak >}}")}
        abstract = "<b>bold</b> [click](javascript:alert(2)) {{{{< meta title >}}}} a >}}}} b"
        keywords = [{json.dumps(INJECT)}, "fMRI"]

        [[report.authors]]
        name = {json.dumps(INJECT)}
        affiliation = "{{{{< meta author >}}}}"
        """)
    cfg = bids_config(project, root, {"c": f"'{INJECT}' - 'B {{{{< meta title >}}}}'"}, extra=report_table)
    env = {**ENV, "ANALYSIS_CONFIG": str(cfg), "MPLBACKEND": "Agg",
           "PATH": f"{Path(quarto).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([quarto, "render", "--to", "html"], cwd=project, env=env, capture_output=True, text=True,
                          timeout=rendered.RENDER_TIMEOUT)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    pages = {p.name: p.read_text(encoding="utf-8") for p in (project / "_book").rglob("*.html")
             if "site_libs" not in p.parts}
    assert pages
    for name, html in pages.items():
        tags = _Tags()
        tags.feed(html)
        assert not [t for t in tags.scripts if "alert(" in t], name  # never a tag
        assert "bold" not in tags.bold and not tags.js_links, name
        assert "?meta:" not in html and "{{<" not in html.replace("{\u2060{", ""), name
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert escaped in pages["index.html"]  # the title page: title, author, keyword
    assert escaped in pages["01-data.html"]  # the events table
    assert escaped in pages["02-methods.html"]  # the methods prose names the condition


# ----------------------------------------------------------------------------- 10. no stale results after a code edit

def test_cache_key_follows_the_computing_code_only(tmp_path):
    from analysis import pipeline

    package = Path(pipeline.__file__).parent
    copy = tmp_path / "analysis"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    base = pipeline.code_fingerprint(copy)
    assert base == pipeline.code_fingerprint(package)
    (copy / "text.py").write_text((copy / "text.py").read_text() + "\n# prose-only edit\n")
    (copy / "templates" / "results.md.j2").write_text("edited")
    assert pipeline.code_fingerprint(copy) == base  # rendering code: results stay valid
    (copy / "inference.py").write_text((copy / "inference.py").read_text() + "\n# a computing edit\n")
    assert pipeline.code_fingerprint(copy) != base


def test_a_code_edit_invalidates_the_cached_results(tmp_path, monkeypatch):
    from analysis import cache, run

    cfg = write_config(tmp_path / "out", calibration={"enabled": False}, dmn={"enabled": False})
    first = run(cfg)
    assert run(cfg).cache_key == first.cache_key  # a hit
    monkeypatch.setattr(cache, "code_fingerprint", lambda package_dir=None: "edited computing code")
    second = run(cfg)
    assert second.cache_key != first.cache_key  # recomputed, not served


@pytest.mark.parametrize("kind", ["fifo", "folder", "huge_header"])
def test_hostile_image_paths_are_named_without_hanging(tmp_path, kind):
    from analysis.data import DataError, _load_nifti

    path = tmp_path / "map.nii"
    if kind == "fifo":
        os.mkfifo(path)  # reading it would block forever
    elif kind == "folder":
        path.mkdir()
    else:
        hdr = nib.Nifti1Header()
        hdr.set_data_shape((3000, 3000, 3000, 1000))
        hdr.set_data_dtype(np.float32)
        path.write_bytes(hdr.binaryblock + b"\0" * 4)  # header only: no data behind it
    with pytest.raises(DataError, match="not a regular file|the header claims"):
        _load_nifti(str(path))
