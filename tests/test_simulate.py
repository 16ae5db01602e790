"""Tests of the simulated listen-vs-rest dataset (analysis.simulate).

Small runs (a few scans) check determinism, shapes and the disk round trip.
The acceptance tests generate the real-size run (84 scans) once per module and
fit the first-level GLM of the report on it; run with ``-s`` to see the
measured numbers.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import simulate
from analysis.simulate import (
    LISTENING_ONSETS,
    SimulationParams,
    listening_events,
    load_simulated,
    recovery,
    save_simulated,
    simulate_run,
)

MNI_3MM_AFFINE = np.array([[3.0, 0, 0, -98], [0, 3.0, 0, -134], [0, 0, 3.0, -72], [0, 0, 0, 1]])
MNI_3MM_SHAPE = (67, 79, 64)
GLM_KWARGS = dict(t_r=7, hrf_model="spm", noise_model="ar1", drift_model="cosine", high_pass=0.01,
                  standardize=False, signal_scaling=0, smoothing_fwhm=None)


def _data(img):
    return np.asarray(img.dataobj)


def _fit_z(run, **overrides):
    """z map of "listening" from the report's FirstLevelModel settings."""
    from nilearn.glm.first_level import FirstLevelModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = FirstLevelModel(**{**GLM_KWARGS, **overrides}, mask_img=run.mask_img, minimize_memory=True)
        model.fit(run.bold_img, events=run.events)
        return model.compute_contrast("listening", output_type="z_score")


def _fdr(z_img):
    from nilearn.glm import threshold_stats_img

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return threshold_stats_img(z_img, alpha=0.05, height_control="fdr", two_sided=True)


def _network_p(run, mask_img):
    """Two-sided p of "listening" for the mean time series over ``mask_img`` (OLS, cosine drifts)."""
    from nilearn.glm.first_level import make_first_level_design_matrix
    from nilearn.glm.regression import OLSModel

    series = _data(run.bold_img)[_data(mask_img) > 0].mean(axis=0)
    frame_times = np.arange(series.size) * run.t_r
    design = make_first_level_design_matrix(frame_times, run.events, hrf_model="spm",
                                            drift_model="cosine", high_pass=0.01)
    contrast = (design.columns == "listening").astype(float)
    result = OLSModel(design.to_numpy()).fit(series[:, None]).Tcontrast(contrast)
    t = float(np.ravel(result.t)[0])
    return t, 2 * stats.t.sf(abs(t), result.df_den)


@pytest.fixture(scope="module")
def default_run():
    start = time.perf_counter()
    run = simulate_run()
    print(f"\nsimulate_run() (84 scans, full grid): {time.perf_counter() - start:.2f} s")
    return run


@pytest.fixture(scope="module")
def default_recovery(default_run):
    z_img = _fit_z(default_run)
    thresholded, threshold = _fdr(z_img)
    scores = recovery(thresholded, default_run.truth)
    print(f"\nnilearn AR(1) GLM, FDR q<0.05 two-sided: z > {threshold:.2f}; {scores}")
    return z_img, scores


# --------------------------------------------------------------------------- design

def test_events_match_the_spm_auditory_run():
    events = listening_events()
    assert list(events.columns) == ["onset", "duration", "trial_type"]
    assert events.onset.tolist() == list(LISTENING_ONSETS) == [42, 126, 210, 294, 378, 462, 546]
    assert (events.duration == 42.0).all()
    assert (events.trial_type == "listening").all()
    assert events.onset.min() > 0  # the run starts with rest
    assert listening_events(n_scans=30).onset.tolist() == [42.0, 126.0]  # 210 s run


def test_drifts_stay_below_the_high_pass():
    basis = simulate._drift_basis(84, 7.0, 30)
    assert basis.shape == (84, 1 + 11)  # linear + cosines 1..11 (11 / 1176 s < 0.01 Hz)
    np.testing.assert_allclose(basis.std(axis=0), 1.0)


def test_params_reject_bad_values():
    with pytest.raises(ValueError, match="n_drift_cosines"):
        SimulationParams(n_drift_cosines=-1)
    with pytest.raises(ValueError, match="rho"):
        SimulationParams(rho=1.0)


# --------------------------------------------------------------------------- determinism, grid

def test_same_seed_gives_identical_arrays():
    a = simulate_run(seed=5, n_scans=6)
    b = simulate_run(SimulationParams(seed=5, n_scans=6))
    np.testing.assert_array_equal(_data(a.bold_img), _data(b.bold_img))
    np.testing.assert_array_equal(_data(a.truth.effect_img), _data(b.truth.effect_img))
    assert a.params == b.params


def test_different_seed_gives_different_noise_same_truth():
    a = simulate_run(seed=5, n_scans=6)
    b = simulate_run(seed=6, n_scans=6)
    assert not np.array_equal(_data(a.bold_img), _data(b.bold_img))
    np.testing.assert_array_equal(_data(a.truth.effect_img), _data(b.truth.effect_img))


def test_bold_is_84_volumes_on_the_mni_3mm_grid(default_run):
    bold = default_run.bold_img
    assert bold.shape == MNI_3MM_SHAPE + (84,)
    assert bold.get_data_dtype() == np.float32
    np.testing.assert_allclose(bold.affine, MNI_3MM_AFFINE)
    assert bold.header.get_zooms() == (3.0, 3.0, 3.0, 7.0)
    for img in (default_run.mask_img, default_run.anat_img, default_run.truth.effect_img,
                default_run.truth.dmn_labels_img, default_run.truth.edge_mask_img):
        assert img.shape == MNI_3MM_SHAPE
        np.testing.assert_allclose(img.affine, MNI_3MM_AFFINE)
    assert default_run.t_r == 7.0
    pd.testing.assert_frame_equal(default_run.events, listening_events())


def test_mean_image_is_brain_like_and_gm_tsnr_is_realistic(default_run):
    from nilearn import datasets

    bold = _data(default_run.bold_img)
    brain = _data(default_run.mask_img) > 0
    gm = (datasets.load_mni152_gm_template(resolution=3).get_fdata() >= 0.5) & brain
    effect = _data(default_run.truth.effect_img)
    series = bold[gm & (effect == 0)]
    mean = series.mean(axis=1)
    tsnr_raw = np.median(mean / series.std(axis=1))
    scans = np.vander(np.arange(series.shape[1]), 3)  # quadratic detrend
    resid = series.T - scans @ np.linalg.lstsq(scans, series.T, rcond=None)[0]
    tsnr_detrended = np.median(mean / resid.std(axis=0))
    print(f"\nGM baseline median {np.median(mean):.0f}; GM tSNR median raw {tsnr_raw:.1f}, "
          f"detrended {tsnr_detrended:.1f}")
    assert 600 <= np.median(mean) <= 1000
    assert 50 <= tsnr_raw <= 100
    assert 50 <= tsnr_detrended <= 100
    assert (bold[~brain] == 0).all()


# --------------------------------------------------------------------------- ground truth

def test_truth_plants_flat_plateaus_in_grey_matter(default_run):
    truth, params = default_run.truth, default_run.params
    effect = _data(truth.effect_img)
    auditory = _data(truth.auditory_mask_img) > 0
    edge = _data(truth.edge_mask_img) > 0
    plateau = auditory & ~edge
    assert plateau.sum() > 150
    np.testing.assert_allclose(effect[plateau], params.auditory_psc)
    assert (np.abs(effect[edge]) < 2.0).all() and (effect[edge] != 0).all()
    labels = _data(truth.dmn_labels_img)
    assert set(np.unique(labels)) == {0, 1, 2, 3, 4} == {0, *truth.dmn_regions}
    np.testing.assert_allclose(effect[(labels > 0) & ~edge], params.dmn_psc)
    assert (effect[~auditory & (labels == 0)] == 0).all()
    # left and right auditory cortex both carry signal
    x_mm = np.indices(effect.shape)[0] * 3 - 98
    assert (plateau & (x_mm < 0)).sum() > 50 and (plateau & (x_mm > 0)).sum() > 50


def test_null_dmn_variant_plants_nothing_in_the_dmn():
    run = simulate_run(n_scans=6, dmn_psc=0.0)
    effect = _data(run.truth.effect_img)
    dmn = _data(run.truth.dmn_mask_img) > 0
    assert dmn.sum() > 300  # the regions still exist, for scoring
    assert (effect[dmn] == 0).all()
    assert (effect >= 0).all()  # no negative effect anywhere
    edge = _data(run.truth.edge_mask_img) > 0
    assert not (edge & dmn).any()


def test_save_load_round_trip(tmp_path):
    run = simulate_run(seed=2, n_scans=8)
    folder = tmp_path / "sim"
    paths = save_simulated(run, folder)
    assert {p.name for p in folder.iterdir()} == {p.name for p in paths.values()}
    assert {"bold", "events", "truth_effect", "truth_auditory_mask", "truth_dmn_mask", "truth_dmn_labels",
            "truth_brain_mask", "truth_edge_mask", "anat", "params"} == set(paths)
    back = load_simulated(folder)
    assert back.params == run.params
    assert back.t_r == run.t_r
    pd.testing.assert_frame_equal(back.events, run.events)
    assert back.truth.dmn_regions == run.truth.dmn_regions
    for name in ("effect_img", "auditory_mask_img", "dmn_mask_img", "dmn_labels_img", "brain_mask_img",
                 "edge_mask_img"):
        np.testing.assert_array_equal(_data(getattr(back.truth, name)), _data(getattr(run.truth, name)))
    np.testing.assert_array_equal(_data(back.bold_img), _data(run.bold_img))
    np.testing.assert_allclose(back.bold_img.affine, run.bold_img.affine)
    # the anatomical image is read back, not resampled again from the template
    np.testing.assert_allclose(_data(back.anat_img), _data(run.anat_img), rtol=1e-6)
    np.testing.assert_allclose(back.anat_img.affine, run.anat_img.affine)

    # Saving again replaces the folder atomically and leaves no temporary folders behind.
    other = simulate_run(seed=3, n_scans=5, edge_fraction=0.0)  # no events at all
    paths = save_simulated(other, folder)
    assert "truth_edge_mask" not in paths
    assert [p.name for p in tmp_path.iterdir()] == ["sim"]
    back = load_simulated(folder)
    assert back.params.seed == 3 and back.truth.edge_mask_img is None
    pd.testing.assert_frame_equal(back.events, other.events)


def test_load_reports_a_missing_file(tmp_path):
    save_simulated(simulate_run(n_scans=4), tmp_path / "sim")
    (tmp_path / "sim" / "truth_effect.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="truth_effect"):
        load_simulated(tmp_path / "sim")


def test_recovery_scores_a_perfect_and_a_wrong_map():
    run = simulate_run(n_scans=4)
    perfect = recovery(run.truth.effect_img, run.truth)
    assert perfect["sensitivity"] == 1.0 and perfect["fdp"] == 0.0
    assert perfect["dmn_sensitivity"] == 1.0
    flipped = recovery(type(run.truth.effect_img)(-_data(run.truth.effect_img), run.truth.effect_img.affine),
                       run.truth)
    assert flipped["sensitivity"] == 0.0 and flipped["fdp"] == 1.0


# --------------------------------------------------------------------------- acceptance

def test_auditory_activation_is_recovered_with_the_report_glm(default_recovery):
    _, scores = default_recovery
    assert scores["sensitivity"] >= 0.8, scores


@pytest.mark.xfail(strict=True, reason=(
    "nilearn's noise_model='ar1' estimates rho by Yule-Walker on OLS residuals with no bias correction; "
    "with 84 scans and 13 regressors it is biased by about -0.25 (true 0.3 -> median 0.05), so null z "
    "has sd ~1.28 and FDR is not controlled. Calibration is shown by the OLS test on white noise below; the "
    "project's bias-corrected 'ar1_bc' (analysis/noise.py) meets the target on this run."))
def test_false_discovery_proportion_with_the_report_glm(default_recovery):
    _, scores = default_recovery
    assert scores["fdp"] <= 0.1, scores


def test_simulation_is_calibrated_when_the_noise_model_matches():
    """White noise fitted with OLS: the simulator + truth + recovery meet both targets."""
    run = simulate_run(rho=0.0)
    thresholded, threshold = _fdr(_fit_z(run, noise_model="ols"))
    scores = recovery(thresholded, run.truth)
    print(f"\nOLS GLM on rho=0 data, FDR q<0.05 two-sided: z > {threshold:.2f}; {scores}")
    assert scores["sensitivity"] >= 0.8, scores
    assert scores["fdp"] <= 0.1, scores


def test_dmn_deactivation_is_strong_for_the_network_weak_per_voxel(default_run, default_recovery):
    z_img, scores = default_recovery
    t, p = _network_p(default_run, default_run.truth.dmn_mask_img)
    z = _data(z_img)
    effect = _data(default_run.truth.effect_img)
    edge = _data(default_run.truth.edge_mask_img) > 0
    dmn_z = z[(effect < 0) & ~edge].mean()
    auditory_z = z[(effect > 0) & ~edge].mean()
    print(f"\nDMN mean series: t = {t:.2f}, p = {p:.2g}; mean voxel z DMN {dmn_z:.2f}, auditory {auditory_z:.2f}; "
          f"voxel-wise DMN sensitivity {scores['dmn_sensitivity']:.2f}")
    assert t < 0 and p < 1e-4
    assert -3.5 < dmn_z < -1.0
    assert scores["dmn_sensitivity"] < 0.5 < scores["sensitivity"]


def test_null_dmn_network_shows_no_effect():
    run = simulate_run(dmn_psc=0.0)
    t, p = _network_p(run, run.truth.dmn_mask_img)
    print(f"\nnull DMN mean series: t = {t:.2f}, p = {p:.2g}")
    assert p > 0.01


def test_simulation_module_exports_its_api():
    assert set(simulate.__all__) >= {"LISTENING_ONSETS", "listening_events", "SimulationParams", "GroundTruth",
                                     "SimulatedRun", "simulate_run", "save_simulated", "load_simulated",
                                     "recovery"}
