import math

import nibabel as nib
import numpy as np
import pytest

from analysis import inference
from analysis.config import InferenceConfig


def _z_img(rng, affine, planted=True):
    z = rng.standard_normal((20, 22, 24)).astype(np.float32)
    if planted:
        z[3:7, 3:7, 3:7] += 7.0  # 64 voxels, positive
        z[12:16, 12:16, 12:16] -= 7.0  # 64 voxels, negative
    return nib.Nifti1Image(z, affine)


def _mask(img):
    return nib.Nifti1Image(np.ones(img.shape, np.uint8), img.affine)


@pytest.mark.parametrize("two_sided", [True, False])
def test_every_threshold_reports_its_cutoff_and_counts(rng, affine, two_sided):
    img = _z_img(rng, affine)
    res = inference.threshold_all(img, _mask(img), InferenceConfig(two_sided=two_sided))
    assert list(res) == ["z3", "fpr", "fdr", "fdr_cluster", "bonferroni"]
    fpr = res["fpr"][1]
    assert math.isclose(fpr.z_threshold, 3.2905 if two_sided else 3.0902, abs_tol=1e-3)
    assert res["bonferroni"][1].z_threshold > fpr.z_threshold
    for img_thr, r in res.values():
        data = np.asarray(img_thr.dataobj)
        assert r.n_pos == (data > 0).sum() and r.n_neg == (data < 0).sum()
    fdr = res["fdr_cluster"][1]
    assert fdr.n_pos_clusters == 1 and fdr.n_pos >= 60
    assert (fdr.n_neg_clusters, fdr.n_neg >= 60) == ((1, True) if two_sided else (0, False))


def test_fdr_threshold_is_reported_in_label():
    spec = inference.ThresholdSpec("fdr_cluster", "fdr", 0.05, None, 10, True)
    assert spec.label == "FDR q < 0.05, clusters \u2265 10 voxels"


def test_no_surviving_voxel_is_a_normal_outcome(rng, affine):
    img = _z_img(rng, affine, planted=False)
    thr_img, r = inference.apply_threshold(img, _mask(img), inference.threshold_specs(InferenceConfig())[2])
    assert not r.survived and not math.isfinite(r.z_threshold)
    assert r.threshold_text.startswith("undefined")
    table, labels = inference.cluster_table(img, r)
    assert table.empty and list(table.columns) == inference.CLUSTER_COLUMNS and labels is None
    assert inference.ThresholdResult.from_dict(r.to_dict()) == r  # inf survives JSON as null


def test_cluster_table_matches_label_image(rng, affine):
    img = _z_img(rng, affine)
    thr = inference.threshold_all(img, _mask(img), InferenceConfig())
    table, labels = inference.cluster_table(img, thr["fdr_cluster"][1])
    mains = table[table["Cluster ID"].str.fullmatch(r"\d+")]
    assert list(mains["Cluster ID"]) == ["1", "2"] and list(mains["Sign"]) == ["+", "\u2212"]
    lab = np.asarray(labels.dataobj)
    for _, row in mains.iterrows():
        assert (lab == int(row["Cluster ID"])).sum() == row["Cluster Size (voxels)"]
        assert row["Cluster Size (mm3)"] == row["Cluster Size (voxels)"] * 27
    assert (table["Peak p"] < 1e-6).all()
