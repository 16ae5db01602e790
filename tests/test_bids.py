"""Your own data: a small simulated BIDS dataset (two conditions, a planted effect), raw and fMRIPrep-like."""

import json
import os

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from analysis import run
from analysis.config import load_config
from analysis.data import DataError, load_bids

TR = 2.0
N_SCANS = 100
PLANTED = (-48.0, -24.0, 8.0)  # mm MNI, left superior temporal


def _write_bids(root, space=True, two_runs=False):
    """sub-01 task-faces: blocks of A and B (16 s each); A adds 3 % in a 12 mm sphere at PLANTED."""
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template
    from nilearn.glm.first_level import make_first_level_design_matrix
    from nilearn.image import resample_img

    rng = np.random.default_rng(7)
    target = np.diag([6.0, 6.0, 6.0, 1.0])
    target[:3, 3] = [-90.0, -126.0, -72.0]
    shape = (31, 37, 31)
    template = resample_img(load_mni152_template(resolution=2), target_affine=target, target_shape=shape,
                            copy_header=True, force_resample=True)
    brain = resample_img(load_mni152_brain_mask(resolution=2), target_affine=target, target_shape=shape,
                         interpolation="nearest", copy_header=True, force_resample=True)
    mask = np.asarray(brain.dataobj) > 0
    base = np.where(mask, 600 + 400 * np.asarray(template.dataobj) / np.asarray(template.dataobj).max(), 0)
    onsets = np.arange(8, N_SCANS * TR - 32, 32.0)
    events = pd.DataFrame({"onset": np.concatenate([onsets, onsets + 16]), "duration": 16.0,
                           "trial_type": ["A"] * len(onsets) + ["B"] * len(onsets)}).sort_values("onset")
    dm = make_first_level_design_matrix(np.arange(N_SCANS) * TR, events, hrf_model="spm", drift_model=None)
    reg = dm["A"].to_numpy() / dm["A"].max()
    ijk = np.indices(shape).reshape(3, -1).T
    xyz = nib.affines.apply_affine(target, ijk).reshape(shape + (3,))
    sphere = (np.linalg.norm(xyz - np.array(PLANTED), axis=-1) <= 12) & mask
    noise = rng.standard_normal(shape + (N_SCANS,)) * (base[..., None] / 80.0)
    data = base[..., None] * (1 + 0.03 * sphere[..., None] * reg) + noise
    img = nib.Nifti1Image(data.astype(np.float32), target)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_zooms((6.0, 6.0, 6.0, TR))

    (root / "sub-01" / "func").mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "test", "BIDSVersion": "1.8.0"}))
    (root / "task-faces_bold.json").write_text(json.dumps({"RepetitionTime": TR, "TaskName": "faces"}))
    runs = ["1", "2"] if two_runs else [None]
    for r in runs:
        ent = "sub-01_task-faces" + (f"_run-{r}" if r else "")
        nib.save(img, root / "sub-01" / "func" / f"{ent}_bold.nii.gz")
        events.to_csv(root / "sub-01" / "func" / f"{ent}_events.tsv", sep="\t", index=False)
        if space:
            d = root / "derivatives" / "fmriprep" / "sub-01" / "func"
            d.mkdir(parents=True, exist_ok=True)
            nib.save(img, d / f"{ent}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz")
            nib.save(nib.Nifti1Image(mask.astype(np.uint8), target),
                     d / f"{ent}_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz")
            conf = pd.DataFrame(rng.normal(0, 0.05, (N_SCANS, 2)), columns=["trans_x", "trans_y"])
            conf.iloc[0] = np.nan  # fMRIPrep derivatives start with n/a
            conf.to_csv(d / f"{ent}_desc-confounds_timeseries.tsv", sep="\t", index=False, na_rep="n/a")
    return root


def _config(folder, root, **bids):
    items = {"root": str(root), "subject": "01", "task": "faces", **bids}
    lines = ["[data]", 'dataset = "bids"', "", "[bids]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in items.items()]
    lines += ["", "[glm]", "t_r = 0.0", "", "[contrasts]", 'AvsB = "A - B"', 'A = "A"', "",
              "[calibration]", "n_null = 2", 'reference_model = ""', "", "[dmn]", "seed_map = false", "",
              "[output]", f'dir = "{folder}"', ""]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "analysis.toml"
    path.write_text("\n".join(lines))
    return path


@pytest.fixture(scope="module")
def bids_results(tmp_path_factory):
    root = _write_bids(tmp_path_factory.mktemp("bids"))
    cfg = _config(tmp_path_factory.mktemp("out"), root, space="MNI152NLin2009cAsym",
                  confounds=["trans_x", "trans_y"])
    return run(cfg), cfg


def test_tr_comes_from_the_sidecar_and_confounds_enter_the_design(bids_results):
    res, _ = bids_results
    assert res.dataset.t_r == TR and "RepetitionTime in task-faces_bold.json" in res.dataset.t_r_source
    assert {"A", "B", "trans_x", "trans_y"} <= set(res.model.design_columns)
    assert res.model.conditions == ("A", "B")


def test_the_right_contrast_finds_the_planted_cluster(bids_results):
    res, _ = bids_results
    c = res.contrast("AvsB")
    assert c.direction == "A > B" and dict(zip(res.model.design_columns, c.vector))["B"] == -1
    peaks = c.peaks("+")
    assert len(peaks), c.clusters
    top = peaks.iloc[0]
    dist = np.linalg.norm(np.array([top["X"], top["Y"], top["Z"]]) - np.array(PLANTED))
    print(f"\nBIDS test: A > B peak {top['X']:.0f}, {top['Y']:.0f}, {top['Z']:.0f} mm, z = {top['Peak Stat']:.2f}, "
          f"{dist:.1f} mm from the planted centre; label {top['Label']!r}")
    assert dist <= 12 and "Left" in top["Label"]
    assert c.primary.n_neg == 0


def test_chapters_run_on_the_bids_report(bids_results):
    from conftest import PROJECT
    from book_sources import book_chapters, expand_chapter

    res, cfg = bids_results
    os.environ["ANALYSIS_CONFIG"] = str(cfg)
    try:
        for name in ("index.qmd", "01-data.qmd", "03-results.qmd"):
            ch = expand_chapter(next(p for p in book_chapters(PROJECT) if p.name == name), PROJECT)
            assert all("Traceback" not in o for o in ch.outputs)
    finally:
        os.environ.pop("ANALYSIS_CONFIG")


def test_raw_bids_run_already_in_mni_is_detected_declarable_and_never_normalised_twice(tmp_path):
    """The raw run of this dataset is written on an MNI grid: it is detected as MNI (labels, DMN), a user can
    declare it native, a run moved into scanner coordinates is native, and forcing preprocessing is refused."""
    from analysis.space import DETECTED_SPACE, detect_mni

    root = _write_bids(tmp_path / "bids", space=False)
    detected = load_bids(load_config(_config(tmp_path / "out", root)))
    print(f"\nraw run: {detected.description}")
    assert detected.space == DETECTED_SPACE and detected.t_r == TR and detected.confounds is None
    assert "detected as in MNI space" in detected.description
    declared = load_bids(load_config(_config(tmp_path / "out2", root, raw_space="native")))
    assert declared.space == "native" and "declared" in declared.description
    declared = load_bids(load_config(_config(tmp_path / "out3", root, raw_space="MNI152NLin2009cAsym")))
    assert declared.space == "MNI152NLin2009cAsym"
    # the same image in scanner coordinates: rotated 12 degrees and moved 40 mm
    img = detected.bold_img
    a = np.deg2rad(12)
    pose = np.array([[1, 0, 0, 0], [0, np.cos(a), -np.sin(a), 40], [0, np.sin(a), np.cos(a), -30], [0, 0, 0, 1.0]])
    native = detect_mni(nib.Nifti1Image(np.asarray(img.dataobj), pose @ img.affine))
    print(f"moved run: {native.reason}")
    assert not native.is_mni and detect_mni(img).is_mni
    cfg = _config(tmp_path / "out4", root)
    cfg.write_text(cfg.read_text() + '\n[preprocessing]\nmode = "on"\n')
    with pytest.raises(DataError, match="already in MNI152 space .* normalising it again"):
        run(cfg)


def test_faces_task_gets_no_auditory_sentence(bids_results):
    """The positive control follows the data: a task the report does not know gets none, and the DMN prose uses
    the contrast's own condition names."""
    from analysis import report

    res, _ = bids_results
    prose = report.dmn_text(res)
    print("\n" + prose)
    assert "uditory" not in prose and "listening" not in prose
    assert "No positive-control network was tested" in prose and "A > B" in prose


@pytest.mark.parametrize("bids, match", [
    ({"subject": "02"}, "no BOLD run for sub-02 task-faces"),
    ({"confounds": ["trans_z"]}, "no confound column 'trans_z'"),
])
def test_bids_mistakes_are_named(tmp_path, bids, match):
    root = _write_bids(tmp_path / "bids")
    cfg = load_config(_config(tmp_path / "out", root, space="MNI152NLin2009cAsym", **bids))
    with pytest.raises(DataError, match=match):
        load_bids(cfg)


def test_several_runs_need_a_run_label(tmp_path):
    root = _write_bids(tmp_path / "bids", space=False, two_runs=True)
    with pytest.raises(DataError, match=r"2 runs match sub-01 task-faces .*set bids.run"):
        load_bids(load_config(_config(tmp_path / "out", root)))
    assert load_bids(load_config(_config(tmp_path / "out2", root, run="2"))).t_r == TR
