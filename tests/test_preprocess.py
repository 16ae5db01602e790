"""Preprocessing of native-space data: motion, registration, FD, QC figures, methods text.

The slow part (one full run of :func:`analysis.preprocess.preprocess` on the
84-volume native-space simulation, then one GLM) happens once per module.
"""

from __future__ import annotations

import re

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

from analysis import text  # noqa: E402
from analysis.preprocess import (  # noqa: E402
    MOTION_COLUMNS,
    PreprocessParams,
    framewise_displacement,
    motion_confounds,
    motion_summary,
    rigid_matrix,
    rigid_parameters,
)

CITEKEYS = {"avants2008", "avants2011", "power2012", "fonov2011"}


def _motion(rows) -> pd.DataFrame:
    return pd.DataFrame(np.asarray(rows, dtype=float), columns=list(MOTION_COLUMNS))


# --------------------------------------------------------------------------- unit tests

def test_fd_is_sum_of_absolute_differences_with_50_mm_rotations():
    motion = _motion([
        [0, 0, 0, 0, 0, 0],
        [0.1, -0.2, 0.3, 0, 0, 0],           # 0.6 mm of translation
        [0.1, -0.2, 0.3, 0.01, 0, -0.01],    # 2 x 0.01 rad x 50 mm = 1.0 mm
        [0.1, -0.2, 0.3, 0.01, 0, -0.01],    # no change
    ])
    np.testing.assert_allclose(framewise_displacement(motion), [0.0, 0.6, 1.0, 0.0])
    np.testing.assert_allclose(framewise_displacement(motion, radius=80.0), [0.0, 0.6, 1.6, 0.0])


def test_fd_of_empty_and_single_volume_runs():
    assert framewise_displacement(_motion(np.zeros((0, 6)))).size == 0
    np.testing.assert_array_equal(framewise_displacement(_motion(np.ones((1, 6)))), [0.0])


def test_motion_summary_counts_volumes_above_threshold():
    summary = motion_summary([0.0, 0.2, 0.8, 0.1, 0.5, 0.6], threshold=0.5)
    assert summary["n_above"] == 2            # 0.5 itself is not above
    assert summary["volumes_above"] == [2, 5]
    assert summary["max_fd"] == pytest.approx(0.8)
    assert summary["mean_fd"] == pytest.approx(np.mean([0.2, 0.8, 0.1, 0.5, 0.6]))
    assert summary["fraction_above"] == pytest.approx(2 / 6)


def test_rigid_parameters_round_trip_about_a_centre(rng):
    for _ in range(5):
        params = np.r_[rng.uniform(-10, 10, 3), rng.uniform(-0.3, 0.3, 3)]
        centre = rng.uniform(-50, 50, 3)
        matrix = rigid_matrix(params, centre)
        np.testing.assert_allclose(matrix[:3, :3] @ matrix[:3, :3].T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(rigid_parameters(matrix, centre), params, atol=1e-10)
        # t is the displacement of the centre.
        np.testing.assert_allclose(matrix[:3, :3] @ centre + matrix[:3, 3], centre + params[:3])


def test_motion_confounds_have_fmriprep_names():
    motion = _motion([[0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0.1]])
    confounds = motion_confounds(motion)
    assert list(confounds.columns[:6]) == list(MOTION_COLUMNS)
    assert "rot_z_derivative1" in confounds.columns and confounds.shape == (2, 12)
    assert confounds["trans_x_derivative1"].tolist() == [0.0, 1.0]
    assert motion_confounds(motion, derivatives=False).shape == (2, 6)


@pytest.mark.parametrize("bad", [dict(realign_reference="median"), dict(normalisation="SyNQuick"),
                                 dict(smoothing_fwhm=-1), dict(target_resolution=4),
                                 dict(realign_iterations=(10, 10)), dict(n_threads=0),
                                 dict(seed=0)])
def test_params_reject_bad_values(bad):
    with pytest.raises(ValueError):
        PreprocessParams(**bad)


# --------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def native_run():
    from native_sim import simulate_native_run

    return simulate_native_run(seed=3)


@pytest.fixture(scope="module")
def preprocessed(native_run):
    pytest.importorskip("ants")
    from analysis.preprocess import preprocess

    return preprocess(native_run.bold_img, native_run.anat_img,
                      PreprocessParams(smoothing_fwhm=6.0, n_threads=2))


def _relative_to_first(motion: pd.DataFrame) -> np.ndarray:
    """Parameters of T_k @ inv(T_0): motion relative to volume 0, whatever the reference."""
    centre = motion.attrs["centre"]
    matrices = [rigid_matrix(row, centre) for row in motion[list(MOTION_COLUMNS)].to_numpy()]
    first = np.linalg.inv(matrices[0])
    return np.stack([rigid_parameters(m @ first, centre) for m in matrices])


def test_native_simulation_is_in_scanner_space(native_run):
    assert native_run.bold_img.shape == (64, 64, 64, 84)
    assert np.allclose(native_run.bold_img.affine[:3, :3], 3 * np.eye(3))
    np.testing.assert_allclose(native_run.motion.iloc[0], 0.0, atol=1e-12)
    # The head really is moved: tens of mm and several degrees away from MNI.
    assert np.linalg.norm(native_run.mni_to_func[:3, 3]) > 10
    assert native_run.motion["trans_z"].abs().max() > 0.3


def test_realign_is_reproducible(native_run):
    pytest.importorskip("ants")
    import nibabel as nib

    from analysis.preprocess import realign

    img = nib.Nifti1Image(np.asarray(native_run.bold_img.dataobj)[..., :5], native_run.bold_img.affine)
    params = PreprocessParams(realign_reference="first")
    first_img, first = realign(img, params)
    _, second = realign(img, params)
    assert first_img.shape == img.shape
    pd.testing.assert_frame_equal(first, second)
    np.testing.assert_allclose(first.iloc[0], 0.0, atol=1e-3)   # volume 0 onto itself


def test_estimated_motion_matches_truth(native_run, preprocessed):
    assert preprocessed.motion.shape == (84, 6)
    assert preprocessed.motion.attrs["centre"] == pytest.approx(native_run.motion.attrs["centre"])
    error = _relative_to_first(preprocessed.motion) - native_run.motion.to_numpy()
    assert np.abs(error[:, :3]).max() < 0.5                      # mm
    assert np.degrees(np.abs(error[:, 3:])).max() < 0.5          # degrees


def test_fd_tracks_true_fd(native_run, preprocessed):
    true_fd = framewise_displacement(native_run.motion)
    assert np.abs(preprocessed.fd - true_fd).max() < 0.3
    assert preprocessed.qc["n_above"] == motion_summary(true_fd)["n_above"]


def test_output_is_on_the_mni_grid(preprocessed):
    from nilearn.datasets import load_mni152_template

    template = load_mni152_template(resolution=3)
    assert preprocessed.bold_img.shape == template.shape + (84,)
    np.testing.assert_allclose(preprocessed.bold_img.affine, template.affine)
    assert preprocessed.bold_img.header.get_zooms()[3] == pytest.approx(7.0)
    assert preprocessed.qc["mask_dice"] > 0.9
    assert preprocessed.qc["anat_template_correlation"] > 0.9


def test_normalised_truth_lands_on_true_mni_coordinates(native_run, preprocessed):
    from native_sim import region_centroids
    from analysis.preprocess import to_mni

    # The true effect map in volume 0's head position, pushed through the fitted transforms.
    effect_mni = to_mni(native_run.effect_native_img, preprocessed, volume=0)
    regions = (tuple(native_run.mni_run.params.auditory_regions)
               + tuple(native_run.mni_run.params.dmn_regions))
    found = region_centroids(effect_mni, regions)
    assert set(found) == set(native_run.peaks_mni)
    for name, xyz in found.items():
        assert np.linalg.norm(np.subtract(xyz, native_run.peaks_mni[name])) < 6.0, name


@pytest.mark.filterwarnings("ignore:.*mask was given at masker creation")
def test_glm_on_preprocessed_run_finds_auditory_peaks(native_run, preprocessed):
    from nilearn.glm.first_level import FirstLevelModel
    from nilearn.image import math_img

    from native_sim import region_centroids

    model = FirstLevelModel(t_r=native_run.t_r, hrf_model="spm", drift_model="cosine",
                            high_pass=0.01, noise_model="ols", smoothing_fwhm=None,
                            mask_img=preprocessed.mask_img, minimize_memory=True)
    model.fit(preprocessed.bold_img, events=native_run.events,
              confounds=preprocessed.confounds(derivatives=False))
    z_img = model.compute_contrast("listening", output_type="z_score")
    supra = math_img("np.where(z > 3.1, z, 0)", z=z_img)
    found = region_centroids(supra, native_run.mni_run.params.auditory_regions)
    assert len(found) == 2
    for name, xyz in found.items():
        assert np.linalg.norm(np.subtract(xyz, native_run.peaks_mni[name])) < 6.0, name


# --------------------------------------------------------------------------- renderers

def test_qc_figures_are_written(tmp_path, native_run, preprocessed):
    from analysis.figures import qc

    out = preprocessed
    paths = [
        qc.plot_motion(out.motion, out.fd, tmp_path / "desc-motion_qc.png",
                       fd_threshold=out.params.fd_threshold, t_r=native_run.t_r),
        qc.plot_registration(out.mean_img, out.template_img, tmp_path / "desc-normalisation_qc.png",
                             overlay="contours"),
        qc.plot_registration(out.coregistration.warped_img, out.anat_img,
                             tmp_path / "desc-coregistration_qc.png", overlay="edges"),
        qc.plot_carpet(out.realigned_img, tmp_path / "desc-carpet_qc.png", t_r=native_run.t_r,
                       fd=out.fd),
    ]
    for path in paths:
        assert path.exists() and path.stat().st_size > 10_000


def test_qc_registration_rejects_unknown_overlay(tmp_path, preprocessed):
    from analysis.figures import qc

    with pytest.raises(ValueError):
        qc.plot_registration(preprocessed.mean_img, preprocessed.template_img,
                             tmp_path / "x.png", overlay="blend")


@pytest.mark.parametrize("motion_regressors", [0, 12])
def test_methods_text_reports_what_ran(preprocessed, motion_regressors):
    prose = text.render("preprocessing.md.j2", **preprocessed.context(motion_regressors))
    keys = set(re.findall(r"@([A-Za-z0-9_:-]+)", prose))
    assert keys == CITEKEYS
    assert "64 \u00d7 64 \u00d7 64 voxels of 3 mm" in prose
    assert text.fmt_num(preprocessed.qc["mean_fd"]) in prose
    assert "6 mm full width at half maximum" in prose
    assert "12-parameter affine" in prose
    assert ("entered the first-level model" in prose) == bool(motion_regressors)
    assert "{" not in prose and "}" not in prose
