"""A native-space (scanner-space) test case with known head pose and motion.

The SPM auditory images are raw: scanner space, not realigned, not normalised.
This module turns an MNI-space simulated run (:func:`analysis.simulate.simulate_run`)
into such data, with every transform known, so :mod:`analysis.preprocess` can
be checked against the truth:

1. **Subject pose.** ``mni_to_anat`` maps MNI mm to scanner mm for the
   anatomical image: a per-axis scaling (the subject's brain is not MNI-sized)
   followed by a rigid pose (rotation of several degrees, translation of tens
   of mm). The functional run is acquired with the head slightly moved
   (``anat_to_func``, a small rigid offset), so ``mni_to_func = anat_to_func @ mni_to_anat``.
2. **Grids.** The run is resampled onto a plain scanner grid (64 x 64 x
   ``n_slices`` voxels of 3 mm, axis-aligned affine, centred on the scanner
   origin); the anatomical image (the 1 mm MNI152 template standing in for a T1)
   onto a 2 mm grid.
3. **Head motion.** Volume ``k`` sees the head displaced by ``motion_matrices[k]``
   (a smooth random walk plus a few abrupt steps, volume 0 = identity):
   ``bold_k(y) = bold_mni_k(inv(motion_k @ mni_to_func) y)``.

``motion_matrices[k]`` uses :mod:`analysis.preprocess`'s convention: it maps
volume-0 scanner coordinates to volume-``k`` coordinates, which is what a
rigid registration of volume ``k`` (moving) to volume 0 (fixed) estimates.
``motion`` gives the same as six parameters around the centre of the
functional grid.

Examples
--------
>>> from native_sim import simulate_native_run
>>> run = simulate_native_run(n_scans=6)          # doctest: +SKIP
>>> run.bold_img.shape                            # doctest: +SKIP
(64, 64, 64, 6)
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from analysis.preprocess import MOTION_COLUMNS, rigid_matrix, rigid_parameters

__all__ = ["NativeParams", "NativeRun", "simulate_native_run", "region_centroids",
           "motion_walk"]


@dataclass(frozen=True)
class NativeParams:
    """Geometry and motion of the native-space simulation.

    Parameters
    ----------
    seed : int
        Seed of the motion random walk (the MNI-space run has its own seed).
    pose_rotation_deg : tuple of 3 floats
        Head rotation (x, y, z; degrees) of the anatomical scan relative to MNI.
    pose_translation_mm : tuple of 3 floats
        Head translation (mm) of the anatomical scan relative to MNI.
    brain_scale : tuple of 3 floats
        Per-axis size of the subject's brain relative to MNI152.
    func_rotation_deg, func_translation_mm : tuple of 3 floats
        Extra rigid offset of the head between the anatomical and functional scans.
    max_translation_mm : float
        Largest absolute translation of the smooth motion walk (mm).
    max_rotation_deg : float
        Largest absolute rotation of the smooth motion walk (degrees).
    n_steps : int
        Abrupt head movements (steps of ``step_mm``) added to the walk.
    step_mm : float
        Size of each abrupt step (translation, mm).
    n_slices : int
        Slices of the functional grid (64 x 64 x n_slices, 3 mm voxels).
    anat_voxel_mm : float
        Voxel size of the anatomical grid.
    anat_noise : float
        Gaussian noise on the anatomical image, as a fraction of its maximum.
    order : int
        Spline order of the resampling into scanner space (1 = linear).
    """

    seed: int = 0
    pose_rotation_deg: tuple = (8.0, -5.0, 6.0)
    pose_translation_mm: tuple = (6.0, 14.0, -10.0)
    brain_scale: tuple = (1.05, 0.96, 1.03)
    func_rotation_deg: tuple = (2.0, 1.5, -2.5)
    func_translation_mm: tuple = (2.0, -3.0, 4.0)
    max_translation_mm: float = 1.5
    max_rotation_deg: float = 1.5
    n_steps: int = 2
    step_mm: float = 0.8
    n_slices: int = 64
    anat_voxel_mm: float = 2.0
    anat_noise: float = 0.01
    order: int = 1


@dataclass(frozen=True)
class NativeRun:
    """A scanner-space run plus everything needed to check preprocessing.

    Attributes
    ----------
    bold_img : Nifti1Image
        4D float32 run on the scanner grid (64 x 64 x n_slices, 3 mm).
    anat_img : Nifti1Image
        3D T1-like image on a 2 mm scanner grid.
    events : DataFrame
    t_r : float
    motion : DataFrame
        True motion parameters (:data:`analysis.preprocess.MOTION_COLUMNS`),
        relative to volume 0, around ``attrs["centre"]`` (the functional grid centre).
    motion_matrices : ndarray, shape (n_scans, 4, 4)
        True head displacement per volume (volume-0 mm -> volume-k mm).
    mni_to_anat, mni_to_func : ndarray, shape (4, 4)
        MNI mm -> scanner mm of the anatomical image and of volume 0.
    effect_native_img : Nifti1Image
        True percent signal change resampled into volume 0's space.
    peaks_mni : dict
        Region name -> effect-weighted centroid (x, y, z) in MNI mm of the planted effect.
    mni_run : SimulatedRun
        The MNI-space run the native data came from.
    params : NativeParams
    """

    bold_img: nib.Nifti1Image
    anat_img: nib.Nifti1Image
    events: pd.DataFrame
    t_r: float
    motion: pd.DataFrame
    motion_matrices: np.ndarray
    mni_to_anat: np.ndarray
    mni_to_func: np.ndarray
    effect_native_img: nib.Nifti1Image
    peaks_mni: dict
    mni_run: object
    params: NativeParams


def _pose(rotation_deg, translation_mm, scale=(1.0, 1.0, 1.0)) -> np.ndarray:
    rigid = rigid_matrix(tuple(translation_mm) + tuple(np.radians(rotation_deg)))
    return rigid @ np.diag(tuple(scale) + (1.0,))


def _grid(shape, voxel_mm) -> np.ndarray:
    """Axis-aligned RAS affine whose grid centre is the scanner origin."""
    affine = np.diag([voxel_mm] * 3 + [1.0])
    affine[:3, 3] = -voxel_mm * (np.asarray(shape, dtype=float) - 1) / 2
    return affine


def motion_walk(n_scans: int, rng, max_translation_mm=1.5, max_rotation_deg=1.5,
                n_steps=2, step_mm=0.8) -> np.ndarray:
    """Smooth random walk of six rigid parameters, volume 0 = 0.

    Returns
    -------
    ndarray, shape (n_scans, 6)
        Translations (mm) then rotations (radians).
    """
    walk = np.cumsum(rng.standard_normal((n_scans, 6)), axis=0)
    walk = ndimage.gaussian_filter1d(walk, sigma=2.0, axis=0, mode="nearest")
    walk -= walk[0]
    peak = np.abs(walk).max(axis=0)
    peak[peak == 0] = 1.0
    limits = np.array([max_translation_mm] * 3 + [np.radians(max_rotation_deg)] * 3)
    walk = walk / peak * limits * rng.uniform(0.6, 1.0, size=6)
    for _ in range(int(n_steps)):
        start = int(rng.integers(max(1, n_scans // 4), max(2, n_scans - 1)))
        axis = int(rng.integers(0, 3))
        walk[start:, axis] += step_mm * rng.choice([-1.0, 1.0])
    return walk


def _resample(data, source_affine, target_affine, target_shape, point_map, order):
    """Sample ``data`` (on ``source_affine``) at ``point_map @ target`` voxel centres."""
    voxel_map = np.linalg.inv(source_affine) @ point_map @ target_affine
    return ndimage.affine_transform(np.asarray(data, dtype=np.float32), voxel_map[:3, :3],
                                    voxel_map[:3, 3], output_shape=tuple(target_shape),
                                    order=order, mode="constant", cval=0.0)


def _ellipsoid(shape, affine, centre, semi_axes) -> np.ndarray:
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    xyz = affine[:3, :3] @ ijk + affine[:3, 3:4]
    scaled = (xyz - np.asarray(centre, np.float32)[:, None]) / np.asarray(semi_axes, np.float32)[:, None]
    return (np.sqrt((scaled ** 2).sum(axis=0)) <= 1.0).reshape(shape)


def region_centroids(effect_img, regions) -> dict:
    """Effect-weighted centroid (MNI mm) of ``|effect|`` inside each region's ellipsoid.

    Parameters
    ----------
    effect_img : Nifti1Image
        3D effect (or statistic) map in MNI space.
    regions : iterable of (name, centre, semi_axes)
        As ``SimulationParams.auditory_regions``.

    Returns
    -------
    dict
        name -> (x, y, z) mm; regions without any non-zero voxel are left out.
    """
    data = np.abs(np.asarray(effect_img.dataobj, dtype=float))
    out = {}
    for name, centre, semi_axes in regions:
        weights = data * _ellipsoid(data.shape, effect_img.affine, centre, semi_axes)
        if weights.sum() <= 0:
            continue
        ijk = np.array(ndimage.center_of_mass(weights))
        out[name] = tuple(float(v) for v in effect_img.affine[:3, :3] @ ijk + effect_img.affine[:3, 3])
    return out


def simulate_native_run(params: NativeParams | None = None, mni_run=None,
                        **sim_overrides) -> NativeRun:
    """Move an MNI-space simulated run into scanner space, with head motion.

    Parameters
    ----------
    params : NativeParams, optional
        Geometry and motion; defaults to ``NativeParams()``.
    mni_run : SimulatedRun, optional
        The MNI-space run; by default ``simulate_run(**sim_overrides)``.
    **sim_overrides
        Passed to :func:`analysis.simulate.simulate_run` (e.g. ``n_scans=20``).

    Returns
    -------
    NativeRun
    """
    from nilearn import datasets

    params = params or NativeParams()
    if mni_run is None:
        from analysis.simulate import simulate_run

        mni_run = simulate_run(**sim_overrides)
    rng = np.random.default_rng(params.seed)
    mni_bold = np.asarray(mni_run.bold_img.dataobj, dtype=np.float32)
    mni_affine = mni_run.bold_img.affine
    n_scans = mni_bold.shape[3]

    mni_to_anat = _pose(params.pose_rotation_deg, params.pose_translation_mm, params.brain_scale)
    anat_to_func = _pose(params.func_rotation_deg, params.func_translation_mm)
    mni_to_func = anat_to_func @ mni_to_anat

    func_shape = (64, 64, int(params.n_slices))
    func_affine = _grid(func_shape, 3.0)
    centre = func_affine[:3, :3] @ ((np.asarray(func_shape) - 1) / 2) + func_affine[:3, 3]
    walk = motion_walk(n_scans, rng, params.max_translation_mm, params.max_rotation_deg,
                       params.n_steps, params.step_mm)
    matrices = np.stack([rigid_matrix(w, centre) for w in walk])

    bold = np.empty(func_shape + (n_scans,), np.float32)
    for k in range(n_scans):
        # Scanner point y of volume k shows MNI point inv(motion_k @ mni_to_func) y.
        point_map = np.linalg.inv(matrices[k] @ mni_to_func)
        bold[..., k] = _resample(mni_bold[..., k], mni_affine, func_affine, func_shape,
                                 point_map, params.order)
    bold_img = nib.Nifti1Image(bold, func_affine)
    bold_img.header.set_xyzt_units("mm", "sec")
    bold_img.header.set_zooms((3.0, 3.0, 3.0, float(mni_run.t_r)))

    template = datasets.load_mni152_template(resolution=1)
    anat_shape = tuple(int(round(v / params.anat_voxel_mm)) for v in (192, 224, 192))
    anat_affine = _grid(anat_shape, params.anat_voxel_mm)
    anat = _resample(np.asarray(template.dataobj), template.affine, anat_affine, anat_shape,
                     np.linalg.inv(mni_to_anat), 1)
    anat = 1000.0 * anat / max(float(anat.max()), 1e-6)
    if params.anat_noise > 0:
        anat += rng.normal(0.0, params.anat_noise * 1000.0, anat.shape).astype(np.float32)
        anat = np.clip(anat, 0.0, None)
    anat_img = nib.Nifti1Image(anat.astype(np.float32), anat_affine)
    anat_img.header.set_xyzt_units("mm", "sec")

    effect_img = mni_run.truth.effect_img
    effect_native = _resample(np.asarray(effect_img.dataobj), effect_img.affine, func_affine,
                              func_shape, np.linalg.inv(mni_to_func), 1)
    effect_native_img = nib.Nifti1Image(effect_native.astype(np.float32), func_affine)

    regions = tuple(mni_run.params.auditory_regions) + tuple(mni_run.params.dmn_regions)
    motion = pd.DataFrame([rigid_parameters(m, centre) for m in matrices],
                          columns=list(MOTION_COLUMNS))
    motion.index.name = "volume"
    motion.attrs["centre"] = tuple(float(c) for c in centre)
    return NativeRun(
        bold_img=bold_img, anat_img=anat_img, events=mni_run.events, t_r=float(mni_run.t_r),
        motion=motion, motion_matrices=matrices, mni_to_anat=mni_to_anat,
        mni_to_func=mni_to_func, effect_native_img=effect_native_img,
        peaks_mni=region_centroids(effect_img, regions), mni_run=mni_run, params=params,
    )
