"""Native-space data through the whole pipeline: raw BIDS run + T1 in scanner space -> preprocessing -> MNI report."""

import json

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("ants", reason="ANTs (antspyx) is needed for preprocessing: pip install -e '.[preprocess]'")

from analysis import report, run  # noqa: E402
from conftest import write_config  # noqa: E402


@pytest.fixture(scope="module")
def native_results(tmp_path_factory):
    from native_sim import simulate_native_run

    nr = simulate_native_run()
    root = tmp_path_factory.mktemp("native_bids")
    func, anat = root / "sub-01" / "func", root / "sub-01" / "anat"
    func.mkdir(parents=True)
    anat.mkdir(parents=True)
    bold = nr.bold_img
    bold.header.set_xyzt_units("mm", "sec")
    bold.header.set_zooms(bold.header.get_zooms()[:3] + (nr.t_r,))
    nib.save(bold, func / "sub-01_task-auditory_bold.nii.gz")
    nib.save(nr.anat_img, anat / "sub-01_T1w.nii.gz")
    nr.events.to_csv(func / "sub-01_task-auditory_events.tsv", sep="\t", index=False)
    (root / "task-auditory_bold.json").write_text(json.dumps({"RepetitionTime": nr.t_r}))
    cfg = write_config(tmp_path_factory.mktemp("native_out"))
    text = cfg.read_text().replace('dataset = "simulated"', 'dataset = "bids"')
    text += (f'[bids]\nroot = "{root}"\nsubject = "01"\ntask = "auditory"\n\n'
             '[calibration]\nn_null = 2\nreference_model = ""\n\n[dmn]\nseed_map = false\n')
    cfg.write_text(text)
    return run(cfg), nr


def test_preprocessing_ran_and_the_report_is_in_mni(native_results):
    res, _ = native_results
    pre = res.preprocessing
    assert pre.ran and res.dataset.space.startswith("MNI")
    assert len(pre.motion_confounds) == 12 and "trans_x" in res.model.design_columns
    assert pre.context.max_fd > 0
    for role in ("qc.motion", "qc.normalisation", "qc.coregistration", "qc.carpet"):
        assert res.figure(role).stat().st_size > 1000
    methods = report.methods(res)
    assert "realigned, normalised to MNI152 space" in methods and "@sec-preprocessing" in methods
    assert "@fig-qc-motion" in report.preprocessing_section(res)


def test_planted_auditory_clusters_land_within_6_mm_and_are_labelled(native_results):
    """z-weighted centroid of each detected auditory cluster vs. the planted effect-weighted centroid."""
    res, nr = native_results
    c = res.contrast()
    z_img = nib.load(res.path(c.files["z"]))
    labels = np.asarray(nib.load(res.path(c.files["clusters_img"])).dataobj)
    z = np.asarray(z_img.dataobj)
    centroids = []
    for k in np.unique(labels[labels > 0]):
        ijk = np.argwhere(labels == k)
        w = z[tuple(ijk.T)]
        if w.mean() > 0:
            centroids.append(nib.affines.apply_affine(z_img.affine, (ijk * w[:, None]).sum(0) / w.sum()))
    truth = {name: np.asarray(xyz, dtype=float) for name, xyz in nr.peaks_mni.items()
             if np.abs(np.asarray(xyz, dtype=float)[0]) > 30 and np.asarray(xyz, dtype=float)[2] < 20}
    assert len(truth) == 2, nr.peaks_mni  # the two auditory regions
    for name, xyz in truth.items():
        d = min(np.linalg.norm(cen - xyz) for cen in centroids)
        print(f"\n{name}: detected cluster centroid {d:.1f} mm from the planted centroid")
        assert d <= 6.0
    # peaks of smoothed data may sit on a neighbouring label; the clusters' region shares must hold auditory cortex
    for regions in c.peaks("+")["Regions"].astype(str):
        print("cluster regions:", regions)
        assert "Heschl" in regions or "Planum" in regions or "Superior Temporal" in regions, regions
