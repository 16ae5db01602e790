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
    assert spec.label == "FDR q < 0.05 with clusters \u2265 10 voxels"  # no comma: reads as one threshold in a list


def test_no_surviving_voxel_is_a_normal_outcome(rng, affine):
    img = _z_img(rng, affine, planted=False)
    thr_img, r = inference.apply_threshold(img, _mask(img), inference.threshold_specs(InferenceConfig())[2])
    assert not r.survived and not math.isfinite(r.z_threshold)
    assert not r.has_cutoff and r.threshold_text == "none: no voxel can pass"
    table, labels = inference.cluster_table(img, r)
    assert table.empty and list(table.columns) == inference.CLUSTER_COLUMNS and labels is None
    from analysis import serial

    assert serial.from_json(inference.ThresholdResult, serial.to_json(r)) == r  # inf survives JSON


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


def test_cluster_table_lists_no_cluster_outside_the_mask(rng, affine):
    """A map made elsewhere may hold supra-threshold values outside the brain: the table must not see them."""
    img = _z_img(rng, affine)
    z = np.asarray(img.dataobj).copy()
    z[15:19, 2:6, 2:6] = 9.0  # 64 voxels of strong "signal" outside the brain mask
    img = nib.Nifti1Image(z, affine)
    mask = np.ones(z.shape, np.uint8)
    mask[14:, :7, :7] = 0
    mask_img = nib.Nifti1Image(mask, affine)
    thr = inference.threshold_all(img, mask_img, InferenceConfig())
    img_thr, res = thr["fdr_cluster"]
    unmasked, _ = inference.cluster_table(img, res)
    table, labels = inference.cluster_table(img, res, mask_img=mask_img)
    mains = table[table["Cluster ID"].str.fullmatch(r"\d+")]
    unmasked_mains = unmasked[unmasked["Cluster ID"].str.fullmatch(r"\d+")]
    print(f"\nclusters listed without / with the mask: {len(unmasked_mains)} / {len(mains)}; "
          f"positive voxels {int(unmasked_mains[unmasked_mains['Sign'] == '+']['Cluster Size (voxels)'].sum())} / "
          f"{int(mains[mains['Sign'] == '+']['Cluster Size (voxels)'].sum())} (threshold counts {res.n_pos})")
    assert len(unmasked_mains) == 3  # the bug: a cluster entirely outside the brain
    assert len(mains) == 2
    inv = np.linalg.inv(affine)
    for _, row in table.iterrows():
        i, j, k = np.rint(inv @ [row["X"], row["Y"], row["Z"], 1])[:3].astype(int)
        assert mask[i, j, k]
    # the table and the threshold count the same voxels, per sign
    for sign, n in (("+", res.n_pos), ("\u2212", res.n_neg)):
        assert mains[mains["Sign"] == sign]["Cluster Size (voxels)"].sum() == n
    assert ((np.asarray(labels.dataobj) > 0) == (np.asarray(img_thr.dataobj) != 0)).all()


def test_mask_map_zeroes_outside_and_non_finite(affine):
    z = np.full((4, 5, 6), 5.0, np.float32)
    z[0, 0, 0] = np.nan
    mask = np.ones(z.shape, np.uint8)
    mask[3] = 0
    out = np.asarray(inference.mask_map(nib.Nifti1Image(z, affine), nib.Nifti1Image(mask, affine)).dataobj)
    assert out[0, 0, 0] == 0 and (out[3] == 0).all() and (out[1:3] == 5).all()
