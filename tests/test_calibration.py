"""Calibration panel: numbers match an independent computation, the verdict follows the tolerance.

Pure noise on a (20, 25, 40) grid (20,000 voxels) x 84 scans with the reference design.
Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import dataclasses
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn.glm.first_level import FirstLevelModel, make_first_level_design_matrix
from scipy import stats

from analysis.calibration import (THRESHOLDS, Calibration, calibrate, calibration_from_z, choose_null_shifts,
                                  empirical_null, permuted_block_designs)
from analysis.figures.calibration import plot_calibration
from analysis.noise import DEFAULT_NOISE_MODEL, fit_first_level
from analysis.text import render

T_R = 7.0
N_SCANS = 84
SHAPE = (20, 25, 40)
ONSETS = [42, 126, 210, 294, 378, 462, 546]


def _reference_design() -> pd.DataFrame:
    events = pd.DataFrame({"onset": ONSETS, "duration": 42.0, "trial_type": "listening"})
    return make_first_level_design_matrix(np.arange(N_SCANS) * T_R, events, hrf_model="spm",
                                          drift_model="cosine", high_pass=0.01)


def _noise_img(rho: float, seed: int = 0, shape=SHAPE) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """Pure AR(1) noise around a baseline of 100 on 3 mm voxels, plus an all-ones mask."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((N_SCANS, *shape))
    y = np.empty_like(e)
    y[0] = e[0] / np.sqrt(1 - rho**2)
    for t in range(1, N_SCANS):
        y[t] = rho * y[t - 1] + e[t]
    data = np.moveaxis(100 + rng.uniform(1, 5, shape) * y, 0, -1).astype(np.float32)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    return nib.Nifti1Image(data, affine), nib.Nifti1Image(np.ones(shape, np.uint8), affine)


def _print(cal: Calibration) -> None:
    print(f"\n{cal.noise_model:10s} z SD {cal.z_sd:.3f}  empirical null {cal.null_mean:+.3f} / {cal.null_sd:.3f}  "
          f"null designs SD {cal.null_design_sd:.3f} (empirical {cal.null_design_null_sd:.3f})  "
          f"trustworthy {cal.trustworthy}")
    for row in cal.rows:
        print(f"   |z|>{row['threshold']:.2f}: nominal {row['nominal']:.4f}  observed {row['observed']:.4f}  "
              f"null designs {row['null']:.4f}")


@pytest.fixture(scope="module")
def design():
    return _reference_design()


@pytest.fixture(scope="module")
def ar_noise():
    return _noise_img(0.25, seed=11)


@pytest.fixture(scope="module")
def default_cal(ar_noise, design):
    bold_img, mask_img = ar_noise
    return calibrate(bold_img, design, mask_img, contrast="listening", t_r=T_R, n_null=6)


@pytest.fixture(scope="module")
def reference_cal(ar_noise, design):
    bold_img, mask_img = ar_noise
    return calibrate(bold_img, design, mask_img, contrast="listening", t_r=T_R, noise_model="ar1", n_null=4)


def test_default_model_is_trustworthy_on_ar1_noise(default_cal):
    _print(default_cal)
    cal = default_cal
    assert cal.noise_model == DEFAULT_NOISE_MODEL
    assert cal.trustworthy and cal.direction == "calibrated"
    assert abs(cal.z_sd - 1) <= 0.05 and abs(cal.null_sd - 1) <= 0.05
    assert cal.observed_share[-1] <= 2 * cal.nominal_share[-1]
    assert cal.null_design_pooled_share[-1] <= 2 * cal.nominal_share[-1]
    assert cal.n_null == 6 and cal.max_abs_null_corr < 0.3 and cal.max_abs_pair_corr < 0.3
    assert cal.tail_ok and cal.tail_n == 6 * cal.n_voxels


def test_reference_model_is_flagged_as_untrustworthy(reference_cal):
    _print(reference_cal)
    assert not reference_cal.trustworthy
    assert reference_cal.direction == "liberal"
    assert reference_cal.null_sd > 1.1
    text = render("calibration.md.j2", cal=reference_cal)
    assert "not to be trusted" in text and "too small" in text


def test_panel_numbers_match_an_independent_computation(ar_noise, design, default_cal):
    """Recompute SD, mean and shares with numpy from the z map of nilearn's public compute_contrast."""
    bold_img, mask_img = ar_noise
    model = fit_first_level(bold_img, design, mask_img, t_r=T_R)
    z = model.compute_contrast("listening", output_type="z_score").get_fdata()[mask_img.get_fdata() > 0]
    cal = default_cal
    assert cal.n_voxels == z.size == 20_000
    assert cal.z_sd == pytest.approx(np.std(z), abs=1e-9)
    assert cal.z_mean == pytest.approx(np.mean(z), abs=1e-9)
    for t, share, nominal in zip(cal.thresholds, cal.observed_share, cal.nominal_share, strict=True):
        assert share == pytest.approx(np.count_nonzero(np.abs(z) > t) / z.size)
        assert nominal == pytest.approx(2 * stats.norm.sf(t))
    assert cal.mad_sd == pytest.approx(1.4826 * np.median(np.abs(z - np.median(z))))
    assert cal.null_sd == pytest.approx(cal.mad_sd, abs=0.03)  # two estimates of the same spread
    # QQ quantiles are quantiles of z at the normal probabilities of the theoretical axis
    probs = stats.norm.cdf(cal.qq_theoretical)
    np.testing.assert_allclose(cal.qq_observed, np.quantile(z, probs))
    # histogram integrates to the share of z inside its range
    inside = np.mean((z >= cal.hist_edges[0]) & (z <= cal.hist_edges[-1]))
    assert np.sum(np.asarray(cal.hist_observed) * np.diff(cal.hist_edges)) == pytest.approx(inside)


@pytest.mark.filterwarnings("ignore:.*Generation of a mask")
def test_null_designs_match_an_independent_nilearn_fit(design):
    """With OLS the null-design z of the panel equal nilearn's own fit of the shifted design."""
    bold_img, mask_img = _noise_img(0.0, seed=12, shape=(10, 12, 14))
    cal = calibrate(bold_img, design, mask_img, contrast="listening", t_r=T_R, noise_model="ols", n_null=3)
    assert cal.n_null == 3 and cal.null_method == "permuted blocks of design rows"
    L, x = cal.null_block_scans, design["listening"].to_numpy()
    n_seg = len(x) // L
    for order, shares in zip(cal.null_orders, cal.null_design_share, strict=True):
        permuted = design.copy()  # the segments of the listening column in the stored order; the remainder stays
        permuted["listening"] = np.r_[np.concatenate([x[j * L:(j + 1) * L] for j in order]), x[n_seg * L:]]
        model = FirstLevelModel(noise_model="ols", mask_img=mask_img).fit(bold_img, design_matrices=[permuted])
        z = model.compute_contrast("listening").get_fdata()[mask_img.get_fdata() > 0]
        assert shares == pytest.approx(tuple(np.mean(np.abs(z) > t) for t in THRESHOLDS))
    assert cal.null_design_pooled_share == pytest.approx(
        tuple(np.mean(np.asarray(cal.null_design_share)[:, i]) for i in range(len(THRESHOLDS))))


def test_null_designs_are_nearly_orthogonal_to_the_task_and_to_each_other(design):
    """Block-permuted null designs rebuilt from moved events; circular shifts of a periodic design are not."""
    events = pd.DataFrame({"onset": ONSETS, "duration": 42.0, "trial_type": "listening"})

    def design_fn(ev):
        return make_first_level_design_matrix(np.arange(N_SCANS) * T_R, ev, hrf_model="spm", drift_model="cosine",
                                              high_pass=0.01)

    c = np.zeros(design.shape[1])
    c[list(design.columns).index("listening")] = 1
    null = permuted_block_designs(design, c, 6, events=events, design_fn=design_fn, t_r=T_R)
    pair = np.asarray(null.pair_corr)
    off = pair[~np.eye(len(pair), dtype=bool)]
    print(f"\nnull designs ({null.method}, {null.block_scans}-scan segments): r with the real design "
          f"{np.round(null.corr, 2)}; pairwise r (max |r| {np.abs(off).max():.2f}):\n{np.round(pair, 2)}")
    assert len(null.designs) == 6 and null.block_scans == 6 and null.method == "permuted blocks of events"
    assert np.all(np.abs(null.corr) < 0.3) and np.all(np.abs(off) < 0.3)
    for order, dm in zip(null.orders, null.designs):  # each one is nilearn's design of the moved events
        seg = (events["onset"] // (6 * T_R)).astype(int)
        moved = events.assign(onset=[list(order).index(j) * 6 * T_R + o - j * 6 * T_R
                                     for o, j in zip(events["onset"], seg)])
        np.testing.assert_allclose(dm["listening"], design_fn(moved)["listening"], atol=1e-12)
        np.testing.assert_allclose(dm.drop(columns="listening"), design.drop(columns="listening"))
    # the old null designs: circular shifts chosen to be uncorrelated with the task are one design up to sign
    shifts, _ = choose_null_shifts(design, c, 6)
    X = design.to_numpy()
    shifted = []
    for k in shifts:
        Xs = X.copy()
        Xs[:, c != 0] = np.roll(X[:, c != 0], k, axis=0)
        xs = Xs @ c - design.drop(columns="listening").to_numpy() @ np.linalg.lstsq(
            design.drop(columns="listening").to_numpy(), Xs @ c, rcond=None)[0]
        shifted.append(xs / np.linalg.norm(xs))
    old = np.abs(np.corrcoef(shifted)[~np.eye(len(shifted), dtype=bool)])
    print(f"circular shifts {shifts}: pairwise |r| up to {old.max():.2f}")
    assert old.max() > 0.9


def test_heavy_null_tail_makes_the_map_untrustworthy():
    """The verdict looks at the tail as well as the centre: 1 % of null voxels at |z| = 5 fails it."""
    rng = np.random.default_rng(3)
    z = rng.standard_normal(50_000)
    heavy = rng.standard_normal(100_000)
    heavy[:1_000] = 5.0 * np.sign(rng.standard_normal(1_000))
    good = calibration_from_z(z, [rng.standard_normal(100_000)], noise_model="ar1_bc", contrast="listening", t_r=T_R)
    bad = calibration_from_z(z, [heavy], noise_model="ar1_bc", contrast="listening", t_r=T_R)
    print(f"\ntail beyond 3.29: good {good.tail_share:.4%} {np.round(good.tail_ci, 5)}, "
          f"heavy {bad.tail_share:.4%} {np.round(bad.tail_ci, 5)} (nominal {bad.tail_nominal:.4%})")
    assert good.tail_ok and good.trustworthy
    assert bad.null_design_ok and not bad.tail_ok and not bad.trustworthy  # centre fine, tail not
    assert bad.direction == "liberal" and bad.tail_direction == "heavy"
    text = render("calibration.md.j2", cal=bad)
    assert "not to be trusted" in text and "heavier than nominal" in text


def test_empirical_null_ignores_the_tails():
    rng = np.random.default_rng(13)
    z = np.r_[rng.normal(0.0, 1.2, 47_000), rng.normal(5.0, 1.0, 3_000)]  # 6 % true effects
    mean, sd = empirical_null(z)
    print(f"\nempirical null of N(0, 1.2) + 6 % effects: mean {mean:+.3f}, SD {sd:.3f} (plain SD {z.std():.3f})")
    assert abs(mean) < 0.1 and abs(sd - 1.2) < 0.05


@pytest.mark.parametrize("null_sd, expected", [(1.0, True), (1.09, True), (1.12, False), (0.85, False)])
def test_tolerance_sets_the_verdict(default_cal, null_sd, expected):
    """The verdict is the tolerance rule applied to the stored numbers."""
    cal = dataclasses.replace(default_cal, null_sd=null_sd, null_mean=0.0)
    assert cal.null_sd_ok is expected
    text = render("calibration.md.j2", cal=dataclasses.replace(cal, trustworthy=cal.null_sd_ok and cal.null_design_ok))
    assert ("not to be trusted" in text) is (not expected)


def test_calibration_round_trips_through_json(default_cal):
    from analysis import serial

    text = serial.to_json(default_cal)
    assert isinstance(json.loads(text)["qq_observed"], list)
    assert serial.from_json(Calibration, text) == default_cal


def test_text_cites_and_reports_the_panel(default_cal, reference_cal):
    text = render("calibration.md.j2", cal=default_cal, reference=reference_cal)
    print("\n" + text)
    for key in ("@worsley2002", "@efron2004", "@eklund2012"):
        assert key in text
    assert "not to be trusted" not in text.split("For comparison")[0]
    assert "20,000 voxels" in text
    assert f"{default_cal.null_sd:.2f}" in text


def test_figure_is_written_and_deterministic(default_cal, tmp_path):
    first = plot_calibration(default_cal, tmp_path / "a.png")
    second = plot_calibration(default_cal, tmp_path / "b.png")
    assert first.exists() and first.stat().st_size > 10_000
    assert first.read_bytes() == second.read_bytes()


def test_figure_without_null_designs(ar_noise, design, tmp_path):
    bold_img, mask_img = ar_noise
    cal = calibrate(bold_img, design, mask_img, contrast="listening", t_r=T_R, noise_model="ar1_pooled", n_null=0)
    assert cal.n_null == 0 and cal.null_orders == () and cal.null_design_ok
    assert plot_calibration(cal, tmp_path / "c.png").exists()
    assert "null designs" not in render("calibration.md.j2", cal=cal)


def test_reference_calibration_can_reuse_the_main_models_data(ar_noise, design):
    """calibrate(noise_model=..., data_model=main) == calibrate(model=<a new fit of that noise model>)."""
    from analysis.noise import fit_first_level

    img, mask = ar_noise
    main = fit_first_level(img, design, mask, t_r=7.0, noise_model="ar1_bc", minimize_memory=False)
    ref = fit_first_level(img, design, mask, t_r=7.0, noise_model="ar1", minimize_memory=False)
    direct = calibrate(img, design, mask, contrast="listening", t_r=7.0, n_null=2, model=ref)
    reused = calibrate(img, design, mask, contrast="listening", t_r=7.0, n_null=2, noise_model="ar1",
                       data_model=main)
    # the reused path computes the z map without nilearn's results objects: equal to rounding error
    from analysis import serial

    for name, value in serial.to_data(direct).items():
        other = serial.to_data(reused)[name]
        if isinstance(value, float) or (isinstance(value, list) and value and isinstance(value[0], float)):
            np.testing.assert_allclose(other, value, rtol=1e-9, atol=1e-12, err_msg=name)
        else:
            assert other == value, name
