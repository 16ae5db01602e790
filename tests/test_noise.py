"""Noise models: the default one gives a calibrated null z on the reference design.

Pure noise (white or AR(1)) on a (20, 25, 40) grid = 20,000 voxels x 84 scans, fitted with
the reference design (TR 7 s, seven 42 s "listening" blocks, SPM HRF, 0.01 Hz cosine
high-pass): the z map of "listening" must be standard normal. Run with ``-s`` to see the table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from nilearn.glm.first_level import FirstLevelModel, make_first_level_design_matrix
import nibabel as nib

from analysis.noise import (DEFAULT_NOISE_MODEL, NOISE_MODELS, CalibratedFirstLevelModel, bias_corrected_ar1,
                            fit_first_level, fit_noise_model, model_data)

T_R = 7.0
N_SCANS = 84
SHAPE = (20, 25, 40)  # 20,000 voxels: a share of 0.001 is ~20 voxels
ONSETS = [42, 126, 210, 294, 378, 462, 546]
NOMINAL_329 = 0.001  # two-sided p of |z| > 3.29


def _reference_design() -> pd.DataFrame:
    events = pd.DataFrame({"onset": ONSETS, "duration": 42.0, "trial_type": "listening"})
    return make_first_level_design_matrix(np.arange(N_SCANS) * T_R, events, hrf_model="spm",
                                          drift_model="cosine", high_pass=0.01)


def _noise_img(rho, seed: int = 0, shape=SHAPE) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """Pure AR(1) noise (rho scalar or per-voxel array of ``shape``) around a baseline of 100, 3 mm voxels."""
    rng = np.random.default_rng(seed)
    rho = np.broadcast_to(np.asarray(rho, dtype=float), shape)
    e = rng.standard_normal((N_SCANS, *shape))
    y = np.empty_like(e)
    y[0] = e[0] / np.sqrt(1 - rho**2)
    for t in range(1, N_SCANS):
        y[t] = rho * y[t - 1] + e[t]
    scale = rng.uniform(1, 5, shape)  # voxels differ in noise level
    data = np.moveaxis(100 + scale * y, 0, -1).astype(np.float32)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    return nib.Nifti1Image(data, affine), nib.Nifti1Image(np.ones(shape, np.uint8), affine)


def _z(model, mask_img) -> np.ndarray:
    z_img = model.compute_contrast("listening", output_type="z_score")
    return z_img.get_fdata()[mask_img.get_fdata() > 0]


@pytest.fixture(scope="module")
def design():
    return _reference_design()


NOISE_CASES = {"white": 0.0, "ar(1) rho .10": 0.1, "ar(1) rho .25": 0.25, "ar(1) rho .40": 0.4}


@pytest.mark.parametrize("noise", list(NOISE_CASES))
def test_default_model_null_z_is_standard_normal(noise, design):
    bold_img, mask_img = _noise_img(NOISE_CASES[noise], seed=1)
    model = fit_first_level(bold_img, design, mask_img, t_r=T_R, noise_model=DEFAULT_NOISE_MODEL)
    z = _z(model, mask_img)
    sd, share = z.std(), np.mean(np.abs(z) > 3.29)
    print(f"\n{noise:14s} {DEFAULT_NOISE_MODEL:10s} z mean {z.mean():+.3f}  z SD {sd:.3f}  "
          f"share |z|>3.29 {share:.4f} (nominal {NOMINAL_329})  median rho {np.median(model.rho_[0]):.3f}")
    assert abs(sd - 1) <= 0.05
    assert abs(z.mean()) <= 0.05
    assert NOMINAL_329 / 2 <= share <= 2 * NOMINAL_329


def test_reference_ar1_is_not_calibrated_on_white_noise(design):
    """nilearn's ar1 inflates z on this design: the reason the default is different."""
    bold_img, mask_img = _noise_img(0.0, seed=2)
    rows = {}
    for name in ("ols", "ar1", DEFAULT_NOISE_MODEL):
        z = _z(fit_first_level(bold_img, design, mask_img, t_r=T_R, noise_model=name), mask_img)
        rows[name] = (z.std(), np.mean(np.abs(z) > 3.29))
        print(f"\nwhite {name:10s} z SD {rows[name][0]:.3f}  share |z|>3.29 {rows[name][1]:.4f}")
    assert rows["ar1"][0] > 1.1 and rows["ar1"][1] > 3 * NOMINAL_329
    assert abs(rows[DEFAULT_NOISE_MODEL][0] - 1) <= 0.05


def test_regional_autocorrelation_stays_calibrated(design):
    """Half the brain rho .1, half rho .4: the smoothed estimate keeps both halves calibrated."""
    rho = np.zeros(SHAPE)
    rho[:10], rho[10:] = 0.1, 0.4
    bold_img, mask_img = _noise_img(rho, seed=3)
    model = fit_first_level(bold_img, design, mask_img, t_r=T_R, noise_model="ar1_bc")
    z = model.compute_contrast("listening").get_fdata()
    rho_img = model.masker_.inverse_transform(model.rho_[0]).get_fdata()
    for half, true_rho in ((np.s_[2:8], 0.1), (np.s_[12:18], 0.4)):  # away from the border
        zh = z[half].ravel()
        print(f"\nrho {true_rho}: z SD {zh.std():.3f}, share |z|>3.29 {np.mean(np.abs(zh) > 3.29):.4f}, "
              f"median estimated rho {np.median(rho_img[half]):.3f}")
        assert abs(zh.std() - 1) <= 0.05
        assert abs(np.median(rho_img[half]) - true_rho) <= 0.05


def test_all_output_types_work(design):
    bold_img, mask_img = _noise_img(0.2, seed=4, shape=(7, 8, 9))
    for name in NOISE_MODELS:
        model = fit_first_level(bold_img, design, mask_img, t_r=T_R, noise_model=name)
        out = model.compute_contrast("listening", output_type="all")
        assert set(out) == {"z_score", "stat", "p_value", "effect_size", "effect_variance"}
        assert all(img.shape == (7, 8, 9) for img in out.values())
        assert np.all(np.isfinite(out["z_score"].get_fdata()))
        assert isinstance(model, FirstLevelModel)
        assert model.noise_model == name


def test_labels_and_results_have_run_glm_layout(design):
    bold_img, mask_img = _noise_img(0.3, seed=5, shape=(7, 8, 9))
    model = fit_first_level(bold_img, design, mask_img, t_r=T_R, noise_model="ar1_bc", rho_fwhm=0)
    labels, results = model.labels_, model.results_
    assert isinstance(labels, list) and isinstance(results, list) and len(labels) == len(results) == 1
    assert labels[0].shape == (7 * 8 * 9,)
    assert set(np.unique(labels[0])) == set(results[0])
    assert np.allclose(np.asarray(labels[0], dtype=float), model.rho_[0])
    # minimize_memory=True (nilearn's default) keeps only what contrasts need
    assert not hasattr(next(iter(results[0].values())), "Y")


@pytest.mark.filterwarnings("ignore:If design matrices are supplied", "ignore:.*Generation of a mask")
def test_reference_ar1_is_exactly_nilearn(design):
    bold_img, mask_img = _noise_img(0.3, seed=6, shape=(7, 8, 9))
    ours = fit_first_level(bold_img, design, mask_img, t_r=T_R, noise_model="ar1")
    theirs = FirstLevelModel(t_r=T_R, noise_model="ar1", mask_img=mask_img).fit(bold_img, design_matrices=[design])
    np.testing.assert_array_equal(_z(ours, mask_img), _z(theirs, mask_img))


def test_bias_correction_inverts_expected_residual_autocorrelation(design):
    """For a true rho, the OLS-residual autocorrelation averaged over many voxels maps back to rho."""
    X = design.to_numpy(dtype=float)
    rng = np.random.default_rng(7)
    for rho in (0.0, 0.2, 0.4):
        e = rng.standard_normal((N_SCANS, 20000))
        y = np.empty_like(e)
        y[0] = e[0] / np.sqrt(1 - rho**2)
        for t in range(1, N_SCANS):
            y[t] = rho * y[t - 1] + e[t]
        r = y - X @ np.linalg.lstsq(X, y, rcond=None)[0]
        q = np.mean(np.sum(r[1:] * r[:-1], 0) / np.sum(r * r, 0))
        assert q < rho - 0.05  # the raw estimate is biased downwards ...
        assert abs(float(bias_corrected_ar1(q, X)) - rho) < 0.02  # ... the corrected one is not


def test_pooled_model_uses_one_coefficient(design):
    bold_img, mask_img = _noise_img(0.3, seed=8, shape=(7, 8, 9))
    model = fit_first_level(bold_img, design, mask_img, t_r=T_R, noise_model="ar1_pooled")
    assert len(model.results_[0]) == 1 and np.ptp(model.rho_[0]) == 0


def test_model_data_returns_the_fitted_matrix(design):
    bold_img, mask_img = _noise_img(0.3, seed=9, shape=(7, 8, 9))
    model = fit_first_level(bold_img, design, mask_img, t_r=T_R, noise_model="ar1_bc", minimize_memory=False)
    Y = model_data(model)
    labels, results, _ = fit_noise_model(Y, design.to_numpy(float), "ar1_bc", mask_img=model.masker_.mask_img_)
    assert np.array_equal(labels, model.labels_[0])
    assert Y.shape == (N_SCANS, 7 * 8 * 9)
    assert np.allclose(Y.mean(0), 0, atol=1e-3)  # nilearn's mean scaling (percent signal change)


def test_unknown_noise_model_names_the_choices(design):
    bold_img, mask_img = _noise_img(0.0, seed=10, shape=(7, 8, 9))
    with pytest.raises(ValueError, match="ar1_bc") as err:
        fit_first_level(bold_img, design, mask_img, t_r=T_R, noise_model="ar9_magic")
    assert all(name in str(err.value) for name in NOISE_MODELS)
    with pytest.raises(ValueError, match="valid choices"):
        CalibratedFirstLevelModel(noise_model="nope").fit(bold_img, design_matrices=[design])


def test_noise_models_are_described_with_citations():
    assert DEFAULT_NOISE_MODEL in NOISE_MODELS and "ar1" in NOISE_MODELS and "ols" in NOISE_MODELS
    for key, model in NOISE_MODELS.items():
        assert model.name == key and model.description
    assert "worsley2002" in NOISE_MODELS["ar1_bc"].citations


def test_fast_ar1_gives_nilearns_run_glm_bit_for_bit():
    """run_glm_ar1 (no per-voxel toeplitz, integer column groups) == nilearn's run_glm(noise_model="ar1")."""
    from nilearn.glm.first_level import run_glm

    from analysis.noise import blas_threads, run_glm_ar1

    rng = np.random.default_rng(3)
    X = _reference_design().to_numpy(dtype=float)
    rho = rng.uniform(-0.3, 0.7, 3000)
    e = rng.standard_normal((N_SCANS, 3000))
    Y = np.empty_like(e)
    Y[0] = e[0]
    for t in range(1, N_SCANS):
        Y[t] = rho * Y[t - 1] + e[t]
    with blas_threads():  # the same BLAS threads for both
        labels_ref, results_ref = run_glm(Y, X, noise_model="ar1", bins=100)
        labels, results = run_glm_ar1(Y, X, bins=100)
    np.testing.assert_array_equal(labels, labels_ref)
    assert labels.dtype == labels_ref.dtype and list(results) == list(results_ref)
    for key in results_ref:
        np.testing.assert_array_equal(results[key].theta, results_ref[key].theta)
        np.testing.assert_array_equal(results[key].dispersion, results_ref[key].dispersion)
        np.testing.assert_array_equal(results[key].Y, results_ref[key].Y)


def test_nilearn_ar1_through_the_calibrated_class_is_nilearns_fit():
    """CalibratedFirstLevelModel(noise_model="ar1") (OLS fit + run_glm_ar1) == nilearn's FirstLevelModel."""
    from analysis.noise import blas_threads

    img, mask = _noise_img(0.4, seed=5, shape=(6, 7, 8))
    design = _reference_design()
    with blas_threads():
        ours = fit_first_level(img, design, mask, t_r=T_R, noise_model="ar1")
        theirs = FirstLevelModel(t_r=T_R, noise_model="ar1", mask_img=mask, minimize_memory=False).fit(
            img, design_matrices=[design])
    np.testing.assert_array_equal(ours.labels_[0], theirs.labels_[0])
    np.testing.assert_array_equal(ours.compute_contrast("listening").get_fdata(),
                                  theirs.compute_contrast("listening").get_fdata())
    np.testing.assert_array_equal(ours.rho_[0], np.asarray(theirs.labels_[0], dtype=float))


@pytest.mark.parametrize("noise_model", list(NOISE_MODELS))
def test_fast_contrast_z_equals_arm_model_fits_and_compute_contrast(design, noise_model):
    """estimate_rho + t_contrast_z (the calibration's null designs) == one ARModel per bin + compute_contrast."""
    from nilearn.glm.contrasts import compute_contrast

    from analysis.noise import estimate_rho, t_contrast_z

    rho_map = np.linspace(0.0, 0.5, SHAPE[0])[:, None, None] * np.ones(SHAPE)
    img, mask = _noise_img(rho_map, seed=3, shape=SHAPE)
    model = fit_first_level(img, design, mask, t_r=T_R, noise_model="ols", minimize_memory=False)
    Y = model_data(model)
    X = design.to_numpy(float).copy()
    X[:, 0] = np.roll(X[:, 0], 5)  # a null design, as the calibration builds them
    c = np.zeros(X.shape[1])
    c[0] = 1.0
    labels, results, rho = fit_noise_model(Y, X, noise_model, mask_img=mask)
    expected = np.asarray(compute_contrast(labels, results, c, "t").z_score()).ravel()
    fast_rho = estimate_rho(Y, X, noise_model, mask_img=mask)
    np.testing.assert_array_equal(fast_rho, rho)
    if noise_model in ("ar1", "ar1_bc"):
        assert len(np.unique(fast_rho)) > 5  # several bins were exercised
    z = t_contrast_z(Y, X, fast_rho, c)
    assert z.shape == expected.shape
    np.testing.assert_allclose(z, expected, rtol=0, atol=1e-9)


def test_voxel_major_copy_is_kept_for_read_only_data_and_dropped_with_it():
    import gc

    from analysis import noise

    Y = np.arange(12.0).reshape(3, 4)
    Y.flags.writeable = False
    first = noise._voxel_major(Y)
    assert noise._voxel_major(Y) is first and first.flags.c_contiguous
    np.testing.assert_array_equal(first, Y.T)
    writable = np.ones((3, 4))
    assert noise._voxel_major(writable) is not noise._voxel_major(writable)  # never cached: it could change
    del Y, first
    gc.collect()
    assert noise._VOXEL_MAJOR == [None, None]


@pytest.mark.parametrize("noise_model", ["ar1_bc", "ar1", "ols", "ar1_pooled"])
def test_matrix_glm_gives_nilearns_maps_null_z_and_residuals(noise_model):
    """The GLM on the one data matrix (projections, no whitened copy) equals the FirstLevelModel fit on the same data."""
    from analysis.noise import MatrixGLM, ProjectedData, estimate_rho, model_residuals, t_contrast_z

    bold, mask = _noise_img(np.linspace(0.0, 0.5, 7 * 8 * 9).reshape(7, 8, 9), seed=3, shape=(7, 8, 9))
    design = _reference_design()
    ref = fit_first_level(bold, design, mask, t_r=T_R, noise_model=noise_model, minimize_memory=False)
    Y = model_data(ref)
    model = MatrixGLM(ProjectedData(np.ascontiguousarray(Y.T, dtype=np.float64), mask), design, noise_model)
    assert np.array_equal(model.rho_[0], ref.rho_[0])
    c = np.zeros(design.shape[1])
    c[list(design.columns).index("listening")] = 1.0
    theirs, ours = ref.compute_contrast(c, output_type="all"), model.compute_contrast(c, output_type="all")
    for kind in theirs:
        np.testing.assert_allclose(ours[kind].get_fdata(), theirs[kind].get_fdata(), rtol=1e-9, atol=1e-11)
    X_null = design.to_numpy(float).copy()
    X_null[:, list(design.columns).index("listening")] = np.roll(X_null[:, 0], 9)
    rho = estimate_rho(Y, X_null, noise_model, mask_img=mask)
    np.testing.assert_allclose(model.z_map(X_null, c), t_contrast_z(Y, X_null, rho, c), rtol=1e-9, atol=1e-11)
    if noise_model != "ols":
        np.testing.assert_allclose(model_residuals(model), model_residuals(ref), rtol=1e-9, atol=1e-9)


def test_projections_of_a_column_are_computed_once():
    from analysis.noise import ProjectedData

    bold, mask = _noise_img(0.2, shape=(7, 8, 9))
    data = ProjectedData(np.ascontiguousarray(np.asarray(bold.dataobj)[np.asarray(mask.dataobj) > 0]), mask,
                         chunk=100)  # several blocks of voxels
    X = _reference_design().to_numpy(float)
    a, u, d = data.projections(X)
    Y = np.asarray(data.Y, dtype=float)
    # to rounding of the largest product: an entry near zero (a cosine drift against centred data) differs from
    # BLAS's own sum by 1e-14 in absolute terms, which a relative tolerance alone reads as 2e-11
    for got, want in ((a, X.T @ Y.T), (u, X[1:].T @ Y[:, :-1].T), (d, X[:-1].T @ Y[:, 1:].T)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    n_cached = len(data._proj)
    data.projections(X[:, ::-1])
    assert len(data._proj) == n_cached
