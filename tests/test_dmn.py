"""Tests for analysis.dmn, analysis.figures.dmn and templates/dmn.md.j2 on small synthetic runs.

The synthetic run copies the SPM auditory timing (84 scans, TR 7 s, seven 42 s "listening" blocks) on a
4 mm MNI grid: a +3 % response in spheres around the Seitzman auditory nodes (outside the DMN), a shared
slow fluctuation in the DMN and, in the planted case, a -1 % response in every Yeo Default-network voxel.
"""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from conftest import atlas_dir  # noqa: E402
import pytest  # noqa: E402

from analysis import dmn, text  # noqa: E402

MNI = "MNI152NLin2009cAsym"
ONSETS = [42, 126, 210, 294, 378, 462, 546]
T_R, N_SCANS = 7.0, 84


DATA_DIR = atlas_dir("yeo_2011")
pytestmark = pytest.mark.skipif(DATA_DIR is None, reason="atlas folder not found: set NILEARN_DATA or "
                                                         "provide ../shared/nilearn_data")


def _design() -> pd.DataFrame:
    from nilearn.glm.first_level import make_first_level_design_matrix

    events = pd.DataFrame({"onset": ONSETS, "duration": 42.0, "trial_type": "listening"})
    return make_first_level_design_matrix(np.arange(N_SCANS) * T_R, events, hrf_model="spm",
                                          drift_model="cosine", high_pass=0.01)


def _synthetic_run(defs: dmn.DMNDefinitions, dmn_psc: float, aud_psc: float = 3.0, seed: int = 0, vox: float = 4.0):
    """(bold_img, design, mask_img) with the effects planted where the atlases say."""
    from nilearn.datasets import load_mni152_brain_mask
    from nilearn.image import resample_to_img

    affine = np.array([[vox, 0, 0, -90], [0, vox, 0, -126], [0, 0, vox, -72], [0, 0, 0, 1.0]])
    shape = (int(180 // vox) + 1, int(216 // vox) + 1, int(180 // vox) + 1)
    ref = nib.Nifti1Image(np.zeros(shape, np.uint8), affine)
    kw = dict(interpolation="nearest", force_resample=True, copy_header=True)
    mask = np.asarray(resample_to_img(load_mni152_brain_mask(), ref, **kw).dataobj) > 0
    in_net = np.asarray(resample_to_img(defs.network_img, ref, **kw).dataobj) > 0
    design = _design()
    x = design["listening"].to_numpy()
    rng = np.random.default_rng(seed)
    ijk = np.argwhere(mask)
    xyz = nib.affines.apply_affine(affine, ijk)
    in_dmn = in_net[tuple(ijk.T)]
    aud = np.zeros(len(ijk), bool)
    for c in defs.control[["X", "Y", "Z"]].to_numpy():
        aud |= np.sum((xyz - c) ** 2, axis=1) <= 10.0 ** 2
    aud &= ~in_dmn
    effect = np.where(in_dmn, dmn_psc, 0.0) + np.where(aud, aud_psc, 0.0)
    Y = 100.0 * (1 + effect[None, :] / 100 * x[:, None]) + rng.standard_normal((N_SCANS, len(ijk)))
    Y[:, in_dmn] += rng.standard_normal(N_SCANS)[:, None]  # shared 1 % DMN fluctuation
    data = np.zeros(shape + (N_SCANS,), np.float32)
    data[tuple(ijk.T)] = Y.T
    return nib.Nifti1Image(data, affine), design, nib.Nifti1Image(mask.astype(np.uint8), affine)


def _z_map(bold, design, mask):
    from nilearn.glm.first_level import FirstLevelModel

    model = FirstLevelModel(mask_img=mask, noise_model="ols", signal_scaling=0, minimize_memory=True)
    return model.fit(bold, design_matrices=design).compute_contrast("listening", output_type="z_score")


@pytest.fixture(scope="module")
def defs():
    return dmn.dmn_definitions(DATA_DIR, download=False)


def _analyse(defs, dmn_psc):
    bold, design, mask = _synthetic_run(defs, dmn_psc)
    z = _z_map(bold, design, mask)
    res, imgs = dmn.analyse_dmn(bold, design, z, 3.1, mask, contrast="listening", noise_model="ar1",
                                data_dir=DATA_DIR, space=MNI, t_r=T_R, definitions=defs,
                                download=False)
    return res, imgs, z


@pytest.fixture(scope="module")
def planted(defs):
    return _analyse(defs, -1.0)


@pytest.fixture(scope="module")
def null(defs):
    return _analyse(defs, 0.0)


def test_definitions_match_the_atlases(defs):
    assert len(defs.nodes) == 67 and set(defs.nodes["Network"]) == {"DefaultMode"}
    assert len(defs.control) == 12 and set(defs.control["Network"]) == {"Auditory"}
    assert defs.network_img is not None and int(np.asarray(defs.network_img.dataobj).sum()) > 10000
    assert defs.n_schaefer_parcels > 50
    assert "Yeo" in defs.network_source


def test_planted_deactivation_is_detected_and_reported(planted):
    res, _, _ = planted
    assert res.network.effect < 0 and res.network.p < 0.05 and res.deactivated
    assert res.control_detected
    assert res.n_nodes_deactivated > 10
    prose = text.render("dmn.md.j2", dmn=res)
    assert "mean signal showed a negative listening effect" in prose and "no evidence of" not in prose
    assert "positive control" in prose and "Auditory regions of @seitzman2020" in prose


def test_no_deactivation_without_a_planted_effect(null):
    res, _, _ = null
    assert not res.deactivated and res.network.p >= 0.05
    assert res.n_nodes_deactivated == 0
    assert res.control_detected  # the auditory control still responds
    prose = text.render("dmn.md.j2", dmn=res)
    assert "no evidence of a DMN deactivation" in prose


@pytest.mark.parametrize("key", ["@yeo2011", "@seitzman2020", "@schaefer2018", "@raichle2001", "@benjamini1995"])
def test_prose_cites_the_sources(planted, key):
    assert key in text.render("dmn.md.j2", dmn=planted[0])


def test_node_table_has_statistics_and_fdr(planted):
    table = planted[0].nodes_table
    assert list(table.columns) == dmn.ROI_COLUMNS
    assert (table["CI Low"] <= table["Effect"]).all() and (table["Effect"] <= table["CI High"]).all()
    assert (table["q"] >= table["p"] - 1e-12).all()
    assert table["Unit"].iloc[0] == "% signal change"


def test_overlap_counts_deactivated_dmn_voxels(planted, null):
    ov = planted[0].overlap
    assert ov.threshold == pytest.approx(-3.1)
    assert ov.share_dmn_below > 0.2 and ov.share_below_in_dmn > 0.9
    assert null[0].overlap.share_dmn_below < 0.01


def test_dmn_overlap_on_a_hand_built_map():
    affine = np.eye(4)
    z = np.zeros((7, 8, 9))
    z[:2] = -4.0  # 2 * 8 * 9 = 144 voxels below -3
    z[z == 0] = 0.5
    net = np.zeros((7, 8, 9), np.uint8)
    net[1:4] = 1  # 216 voxels, 72 of them below
    ov = dmn.dmn_overlap(nib.Nifti1Image(z, affine), 3.0, nib.Nifti1Image(net, affine))
    assert (ov.n_dmn, ov.n_suprathreshold, ov.n_overlap) == (216, 144, 72)
    assert ov.share_dmn_below == pytest.approx(72 / 216) and ov.share_below_in_dmn == pytest.approx(0.5)


def test_seed_map_follows_the_shared_dmn_fluctuation(planted):
    res, imgs, _ = planted
    assert imgs.seed_z.shape == imgs.dmn_mask.shape
    assert res.seed.overlap.n_suprathreshold > 100 and res.seed.overlap.share_below_in_dmn > 0.8


@pytest.mark.parametrize("noise_model", ["ar1", "ar1_bc"])
def test_seed_map_reusing_the_main_model_equals_a_new_fit(defs, noise_model):
    """analyse_dmn(model=<main model>) computes the seed z map from the model's data: same map as a new fit."""
    from analysis.noise import fit_first_level

    bold, design, mask = _synthetic_run(defs, -1.0, seed=1)
    model = fit_first_level(bold, design, mask, t_r=T_R, noise_model=noise_model, minimize_memory=False)
    z = model.compute_contrast("listening", output_type="z_score")
    kw = dict(contrast="listening", noise_model=noise_model, data_dir=DATA_DIR, space=MNI, t_r=T_R,
              definitions=defs, download=False)
    res_new, imgs_new = dmn.analyse_dmn(bold, design, z, 3.1, mask, **kw)
    res_reuse, imgs_reuse = dmn.analyse_dmn(bold, design, z, 3.1, mask, model=model, **kw)
    np.testing.assert_allclose(imgs_reuse.seed_z.get_fdata(), imgs_new.seed_z.get_fdata(), rtol=0, atol=1e-8)
    assert res_reuse.seed.overlap == res_new.seed.overlap
    assert res_reuse.seed.overlap.n_suprathreshold > 50


def test_sphere_signals_equal_nilearns_spheres_masker(defs):
    """Node and seed spheres (k-d tree on the in-mask voxels) give NiftiSpheresMasker's signals, to float32
    rounding: the node means, and the seed series detrended and standardised as nilearn's DMN example does."""
    from nilearn.maskers import NiftiSpheresMasker

    bold, _, mask = _synthetic_run(defs, -1.0)
    nodes = defs.nodes
    ours = dmn.roi_timeseries(bold, nodes, mask, radius=defs.node_radius, scale=False).to_numpy()
    theirs = NiftiSpheresMasker(nodes[["X", "Y", "Z"]].to_numpy(dtype=float), radius=defs.node_radius,
                                mask_img=mask, allow_overlap=True, standardize=None).fit_transform(bold)
    np.testing.assert_allclose(ours, theirs - theirs.mean(axis=0), atol=1e-4 * np.abs(ours).max())
    seed, _ = dmn._seed_series(dmn._Bold(bold, mask), dmn.PCC_SEED, 8.0)
    theirs = NiftiSpheresMasker([dmn.PCC_SEED], radius=8.0, mask_img=mask, detrend=True,
                                standardize="zscore_sample").fit_transform(bold)[:, 0]
    np.testing.assert_allclose(seed, theirs, atol=1e-4)


def test_roi_glm_with_mask_rois(defs, planted):
    bold, design, mask = _synthetic_run(defs, -1.0)
    table = dmn.roi_glm(bold, design, {"dmn": defs.network_img}, "listening", "ols", mask_img=mask)
    assert table.loc[0, "Effect"] < 0 and table.loc[0, "p"] < 0.05


def test_result_round_trips_through_json(planted):
    res = planted[0]
    from analysis import serial

    back = serial.from_json(dmn.DMNResult, serial.to_json(res))
    json.loads(serial.to_json(res))  # standard JSON (NaN travels as a string)
    assert back == res
    pd.testing.assert_frame_equal(back.nodes_table, res.nodes_table, check_dtype=False)
    assert text.render("dmn.md.j2", dmn=back) == text.render("dmn.md.j2", dmn=res)


def test_native_space_is_not_analysed(defs):
    bold, design, mask = _synthetic_run(defs, 0.0)
    res, _ = dmn.analyse_dmn(bold, design, bold.slicer[..., 0], 3.1, mask, contrast="listening", space="native")
    assert not res.applicable and res.network is None
    prose = text.render("dmn.md.j2", dmn=res)
    assert "not run" in prose and "native" in prose


def test_atlas_table_records_unavailable_atlases(planted):
    res = planted[0]
    table = res.atlas_table
    assert set(table["Atlas"]) >= {"DiFuMo", "MSDL", "Yeo 2011", "Schaefer 2018", "Seitzman 2020"}
    for name, reason in res.unavailable.items():
        assert reason in table.loc[table["Atlas"] == name, "Status"].item()


def test_figures_are_written(defs, planted, tmp_path):
    from analysis.figures import dmn as figs

    res, imgs, z = planted
    paths = [
        figs.plot_dmn_map(defs.network_img, tmp_path / "desc-dmn_map.png", schaefer_mask_img=defs.schaefer_img),
        figs.plot_dmn_nodes(defs.nodes, tmp_path / "desc-dmnnodes_glass.png", control=defs.control),
        figs.plot_z_with_dmn_contours(z, imgs.dmn_mask, tmp_path / "desc-dmn_overlap.png", threshold=3.1),
        figs.plot_roi_effects(res.nodes_table, tmp_path / "desc-dmn_roieffects.png", control_table=res.control_table,
                              network=res.network, control_network=res.control_network),
        figs.plot_seed_map(imgs.seed_z, tmp_path / "desc-pccseed_statmap.png", threshold=3.1,
                           dmn_mask_img=imgs.dmn_mask),
    ]
    for p in paths:
        assert p.exists() and p.stat().st_size > 1000
