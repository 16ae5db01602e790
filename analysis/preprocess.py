"""Preprocessing of a native-space (scanner-space) BOLD run with ANTs.

The steps, in order, follow the usual single-subject pipeline (SPM, FSL FEAT,
fMRIPrep), all done with ANTs [@avants2008; @avants2011] through the
``antspyx`` wheel:

1. **Realignment** (:func:`realign`): every volume is registered rigidly (six
   parameters, mean-squares metric) to a reference volume (the first volume,
   the middle one or, SPM style, the mean of a first pass).
2. **Coregistration** (:func:`coregister`): the mean realigned functional
   image is registered rigidly to the anatomical image (Mattes mutual
   information, so T2*- and T1-weighted contrasts can be matched).
3. **Spatial normalisation** (:func:`normalise`): the anatomical image is
   registered to nilearn's bundled MNI152 template (``"Affine"``, 12
   parameters, or ``"SyN"``, affine plus a symmetric diffeomorphic warp with
   few iterations).
4. **One-shot resampling**: for every volume, the composed transform
   (MNI -> anatomical -> mean functional -> volume) is applied once, onto the
   MNI grid of ``target_resolution`` mm, with linear interpolation, so the data
   are interpolated a single time.
5. **Smoothing**: an isotropic Gaussian kernel of ``smoothing_fwhm`` mm.

Motion is summarised as six rigid-body parameters per volume (fMRIPrep names:
``trans_x``, ``trans_y``, ``trans_z`` in mm, ``rot_x``, ``rot_y``, ``rot_z`` in
radians) and as framewise displacement [@power2012].

Conventions
-----------
Every matrix here is a 4x4 array in RAS+ world millimetres (nibabel's
convention; ANTs works in LPS+ internally and is converted at the boundary).
A registration of ``moving`` to ``fixed`` gives a *point map* ``T`` from
fixed-space to moving-space coordinates (ANTs's forward transform): the
resampled image is ``warped(x) = moving(T x)``.

For realignment this means ``T_k`` maps the reference volume's coordinates to
those of volume ``k``: it is the head displacement of volume ``k`` relative to
the reference. The six parameters decompose ``T_k`` as
``x -> R (x - c) + c + t`` with ``R = Rz(rot_z) @ Ry(rot_y) @ Rx(rot_x)`` and
``c`` the centre of the reference volume's field of view, so ``t`` is the
displacement of that centre.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

__all__ = [
    "MOTION_COLUMNS",
    "PreprocessParams",
    "Registration",
    "Preprocessed",
    "realign",
    "coregister",
    "normalise",
    "preprocess",
    "framewise_displacement",
    "motion_summary",
    "motion_confounds",
    "to_mni",
    "rigid_matrix",
    "rigid_parameters",
    "ants_version",
]

#: Motion parameter columns, fMRIPrep names (mm and radians).
MOTION_COLUMNS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")

_NORMALISATIONS = ("Rigid", "Affine", "SyN")
_REFERENCES = ("first", "middle", "mean")
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (its own inverse)


# --------------------------------------------------------------------------- parameters

@dataclass(frozen=True)
class PreprocessParams:
    """Settings of :func:`preprocess`; every field has a default.

    Parameters
    ----------
    smoothing_fwhm : float or None
        FWHM (mm) of the isotropic Gaussian smoothing applied last (``None`` or
        0 = no smoothing; then smooth in the GLM instead, never in both).
    realign_reference : {"mean", "first", "middle"}
        Reference of the realignment. ``"mean"`` registers every volume to the
        first one, then again to the mean of that first pass (SPM's two-pass
        "register to mean"); ``"first"`` and ``"middle"`` are one pass.
    realign_iterations, realign_shrink_factors, realign_smoothing_sigmas : tuple
        Multi-resolution schedule of each per-volume rigid registration
        (iterations per level, downsampling factors, Gaussian sigmas in voxels).
        The default, one level at half resolution after 1-voxel smoothing, is
        close to SPM's default (4 mm sampling after 5 mm FWHM smoothing) and
        keeps the 84-volume run within seconds per pass; ``(30, 10)``,
        ``(2, 1)``, ``(1, 0)`` adds a full-resolution level (about 3x slower).
    realign_sampling : float
        Fraction of voxels (regular grid, random jitter) sampled by the
        mean-squares metric of each realignment registration.
    coregistration_iterations : tuple
        Iterations per level (1 to 3 levels, shrink factors 4, 2, 1 and
        smoothing sigmas 2, 1, 0 voxels) of the rigid mean-functional to
        anatomical registration (Mattes mutual information).
    normalisation : {"Affine", "SyN", "Rigid"}
        Anatomical to MNI152 transform. ``"SyN"`` adds a symmetric
        diffeomorphic warp (ANTs ``SyNRA`` with ``syn_iterations``) to the affine.
    normalisation_iterations : tuple
        Iterations per level (1 to 3 levels, as above) of the linear stage of
        the normalisation.
    syn_iterations : tuple
        Iterations per level of the SyN stage (coarse to fine).
    target_resolution : {1, 2, 3}
        Voxel size (mm) of the MNI152 template grid the run is resampled onto.
    normalisation_resolution : {1, 2, 3}
        Voxel size (mm) of the MNI152 template the anatomical image is registered to.
    n_threads : int
        ITK threads (``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS``). ITK reads it when
        ANTs first runs in the process, so the first call's value holds (or set
        the variable before Python starts).
    fd_radius : float
        Head radius (mm) turning rotations into arc lengths for framewise
        displacement (50 mm, Power et al. 2012).
    fd_threshold : float
        Framewise displacement (mm) above which a volume counts as high-motion.
    seed : int
        Random seed (>= 1; ANTs treats 0 as "seed from the clock") of the
        metric sampling, so registrations repeat exactly.
    """

    smoothing_fwhm: float | None = 6.0
    realign_reference: str = "mean"
    realign_iterations: tuple = (30,)
    realign_shrink_factors: tuple = (2,)
    realign_smoothing_sigmas: tuple = (1.0,)
    realign_sampling: float = 0.2
    coregistration_iterations: tuple = (100, 50)
    normalisation: str = "Affine"
    normalisation_iterations: tuple = (100, 50, 10)
    syn_iterations: tuple = (40, 20, 0)
    target_resolution: int = 3
    normalisation_resolution: int = 2
    n_threads: int = 2
    fd_radius: float = 50.0
    fd_threshold: float = 0.5
    seed: int = 1

    def __post_init__(self):
        for name in ("realign_iterations", "realign_shrink_factors", "realign_smoothing_sigmas",
                     "coregistration_iterations", "normalisation_iterations", "syn_iterations"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.smoothing_fwhm is not None and not self.smoothing_fwhm >= 0:
            raise ValueError(f"smoothing_fwhm must be >= 0 mm or None, got {self.smoothing_fwhm!r}")
        if self.realign_reference not in _REFERENCES:
            raise ValueError(f"realign_reference must be one of {_REFERENCES}, "
                             f"got {self.realign_reference!r}")
        if self.normalisation not in _NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {_NORMALISATIONS}, "
                             f"got {self.normalisation!r}")
        if not (len(self.realign_iterations) == len(self.realign_shrink_factors)
                == len(self.realign_smoothing_sigmas)):
            raise ValueError("realign_iterations, realign_shrink_factors and "
                             "realign_smoothing_sigmas must have the same length")
        for name in ("coregistration_iterations", "normalisation_iterations"):
            if not 1 <= len(getattr(self, name)) <= 3:
                raise ValueError(f"{name} needs 1 to 3 levels (shrink factors 4, 2, 1)")
        for name in ("target_resolution", "normalisation_resolution"):
            if getattr(self, name) not in (1, 2, 3):
                raise ValueError(f"{name} must be 1, 2 or 3 mm, got {getattr(self, name)!r}")
        if int(self.n_threads) != self.n_threads or self.n_threads < 1:
            raise ValueError(f"n_threads must be a positive integer, got {self.n_threads!r}")
        if not 0 < self.realign_sampling <= 1:
            raise ValueError(f"realign_sampling must be in (0, 1], got {self.realign_sampling!r}")
        if int(self.seed) != self.seed or self.seed < 1:
            raise ValueError(f"seed must be an integer >= 1, got {self.seed!r}")
        if not self.fd_radius > 0 or not self.fd_threshold > 0:
            raise ValueError("fd_radius and fd_threshold must be > 0")

    @property
    def smoothing_label(self) -> str:
        """``"6 mm FWHM"`` or ``"none"`` (a one-line label)."""
        if not self.smoothing_fwhm:
            return "none"
        return f"{self.smoothing_fwhm:g} mm FWHM"


# --------------------------------------------------------------------------- results

@dataclass(frozen=True)
class Registration:
    """One registration of ``moving`` onto ``fixed``.

    Attributes
    ----------
    kind : str
        ``"Rigid"``, ``"Affine"`` or ``"SyN"``.
    matrix : ndarray, shape (4, 4)
        Linear part as a RAS+ point map from fixed-space to moving-space mm.
    warp_img : Nifti1Image or None
        SyN displacement field (ANTs file format, on the fixed grid), applied
        before ``matrix`` when mapping fixed points; ``None`` for linear kinds.
    warped_img : Nifti1Image
        The moving image resampled onto the fixed image's grid (for QC).
    fixed_img : Nifti1Image
        The fixed image (for QC overlays).
    metric : str
        Similarity metric of the (last) stage.
    seconds : float
        Wall-clock time of the registration.
    """

    kind: str
    matrix: np.ndarray
    warp_img: nib.Nifti1Image | None
    warped_img: nib.Nifti1Image
    fixed_img: nib.Nifti1Image
    metric: str
    seconds: float

    @property
    def parameters(self) -> dict:
        """Rotation (degrees), translation (mm) and scale of ``matrix``, for reports."""
        linear = self.matrix[:3, :3]
        u, s, vt = np.linalg.svd(linear)
        rotation = u @ vt
        params = rigid_parameters(np.block([[rotation, self.matrix[:3, 3:4]], [np.zeros((1, 3)), 1]]))
        return {
            "translation_mm": tuple(float(v) for v in params[:3]),
            "rotation_deg": tuple(float(np.degrees(v)) for v in params[3:]),
            "scale": tuple(float(v) for v in np.sqrt((linear ** 2).sum(axis=0))),
        }


@dataclass(frozen=True)
class Preprocessed:
    """Output of :func:`preprocess`.

    Attributes
    ----------
    bold_img : Nifti1Image
        4D run in MNI152 space (``target_resolution`` mm grid), smoothed.
    mean_img : Nifti1Image
        Temporal mean of the normalised run before smoothing (QC background).
    anat_mni_img : Nifti1Image
        Anatomical image resampled into MNI152 space.
    template_img : Nifti1Image
        The MNI152 template on the output grid.
    mask_img : Nifti1Image
        MNI152 brain mask on the output grid.
    realigned_img : Nifti1Image
        4D run realigned in native space (reference-volume grid; carpet plot).
    mean_func_img : Nifti1Image
        Mean realigned functional image, native space.
    anat_img : Nifti1Image
        The input anatomical image.
    motion : DataFrame
        Six rigid-body parameters per volume (:data:`MOTION_COLUMNS`) relative to
        the realignment reference; ``attrs["centre"]`` holds the rotation centre.
    fd : ndarray
        Framewise displacement (mm), 0 for the first volume.
    coregistration : Registration
        Mean functional -> anatomical.
    normalisation : Registration
        Anatomical -> MNI152.
    qc : dict
        :func:`motion_summary` plus registration diagnostics (overlap, correlation).
    timings : dict
        Wall-clock seconds per step and ``"total"``.
    params : PreprocessParams
    software : dict
        Package versions that ran (ANTsPy, nilearn).
    """

    bold_img: nib.Nifti1Image
    mean_img: nib.Nifti1Image
    anat_mni_img: nib.Nifti1Image
    template_img: nib.Nifti1Image
    mask_img: nib.Nifti1Image
    realigned_img: nib.Nifti1Image
    mean_func_img: nib.Nifti1Image
    anat_img: nib.Nifti1Image
    motion: pd.DataFrame
    fd: np.ndarray
    coregistration: Registration
    normalisation: Registration
    qc: dict
    timings: dict
    params: PreprocessParams
    software: dict = field(default_factory=dict)

    def confounds(self, derivatives: bool = True) -> pd.DataFrame:
        """Motion confounds for the GLM (see :func:`motion_confounds`)."""
        return motion_confounds(self.motion, derivatives=derivatives)

    def context(self, motion_regressors: int = 0) -> dict:
        """Plain dict for ``preprocessing.md.j2`` (numbers unformatted; the template formats).

        Parameters
        ----------
        motion_regressors : int
            Motion columns the GLM used as confounds (0 = none, 6, or 12 with
            derivatives); only the prose mentions it.
        """
        p = self.params
        return {
            "n_volumes": int(self.bold_img.shape[3]),
            "native_grid_label": _grid_label(self.realigned_img),
            "anat_grid_label": _grid_label(self.anat_img),
            "realign_reference": p.realign_reference,
            "realign_levels": len(p.realign_iterations),
            "realign_iterations": [str(i) for i in p.realign_iterations],
            "normalisation": p.normalisation,
            "normalisation_resolution": p.normalisation_resolution,
            "syn_iterations": [str(i) for i in p.syn_iterations],
            "target_resolution": p.target_resolution,
            "smoothing_fwhm": float(p.smoothing_fwhm or 0.0),
            "fd_radius": p.fd_radius,
            "motion_regressors": int(motion_regressors),
            "ants_version": self.software.get("antspyx", "unknown"),
            "nilearn_version": self.software.get("nilearn", "unknown"),
            "total_seconds": self.timings.get("total", float("nan")),
            **self.qc,
        }


def _grid_label(img) -> str:
    """``"64 × 64 × 40 voxels of 3 mm"`` (or ``3 × 3 × 3.5 mm`` when anisotropic)."""
    shape = " \u00d7 ".join(str(int(n)) for n in img.shape[:3])
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    size = f"{zooms[0]:g} mm" if np.allclose(zooms, zooms[0]) else \
        " \u00d7 ".join(f"{z:g}" for z in zooms) + " mm"
    return f"{shape} voxels of {size}"


# --------------------------------------------------------------------------- motion maths

def rigid_matrix(params, centre=(0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 rigid map from six parameters (see module conventions).

    Parameters
    ----------
    params : sequence of 6 floats
        ``trans_x, trans_y, trans_z`` (mm), ``rot_x, rot_y, rot_z`` (radians).
    centre : sequence of 3 floats
        Rotation centre ``c`` (mm): ``x -> R (x - c) + c + t``.

    Returns
    -------
    ndarray, shape (4, 4)
    """
    tx, ty, tz, rx, ry, rz = (float(v) for v in params)
    cx, sx = np.cos(rx), np.sin(rx)
    cy, sy = np.cos(ry), np.sin(ry)
    cz, sz = np.cos(rz), np.sin(rz)
    rot_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rotation = rot_z @ rot_y @ rot_x
    centre = np.asarray(centre, dtype=float)
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = centre + np.array([tx, ty, tz]) - rotation @ centre
    return matrix


def rigid_parameters(matrix, centre=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Inverse of :func:`rigid_matrix`: six parameters of a 4x4 rigid map.

    Returns
    -------
    ndarray, shape (6,)
        ``trans_x, trans_y, trans_z`` (mm), ``rot_x, rot_y, rot_z`` (radians).
    """
    matrix = np.asarray(matrix, dtype=float)
    rotation = matrix[:3, :3]
    rot_y = -np.arcsin(np.clip(rotation[2, 0], -1.0, 1.0))
    rot_x = np.arctan2(rotation[2, 1], rotation[2, 2])
    rot_z = np.arctan2(rotation[1, 0], rotation[0, 0])
    centre = np.asarray(centre, dtype=float)
    translation = matrix[:3, 3] + rotation @ centre - centre
    return np.concatenate([translation, [rot_x, rot_y, rot_z]])


def _motion_frame(matrices, centre) -> pd.DataFrame:
    rows = [rigid_parameters(m, centre) for m in matrices]
    frame = pd.DataFrame(np.asarray(rows), columns=list(MOTION_COLUMNS))
    frame.index.name = "volume"
    frame.attrs["centre"] = tuple(float(c) for c in centre)
    return frame


def framewise_displacement(motion: pd.DataFrame, radius: float = 50.0) -> np.ndarray:
    """Framewise displacement of Power et al. (2012).

    ``FD_t = |dtrans_x| + |dtrans_y| + |dtrans_z| + radius * (|drot_x| + |drot_y| + |drot_z|)``,
    the sum of absolute backward differences, with rotations (radians) turned
    into displacements on a sphere of ``radius`` mm.

    Parameters
    ----------
    motion : DataFrame
        Columns :data:`MOTION_COLUMNS` (mm and radians), one row per volume.
    radius : float
        Head radius in mm (50 mm in Power et al. 2012).

    Returns
    -------
    ndarray, shape (n_volumes,)
        FD in mm; the first volume has no predecessor and gets 0.

    Examples
    --------
    >>> import pandas as pd
    >>> m = pd.DataFrame({"trans_x": [0, 1.0], "trans_y": [0, 0], "trans_z": [0, 0],
    ...                   "rot_x": [0, 0.01], "rot_y": [0, 0], "rot_z": [0, 0]})
    >>> framewise_displacement(m).tolist()
    [0.0, 1.5]
    """
    values = np.asarray(motion.loc[:, list(MOTION_COLUMNS)], dtype=float)
    if len(values) == 0:
        return np.zeros(0)
    diffs = np.abs(np.diff(values, axis=0))
    fd = diffs[:, :3].sum(axis=1) + float(radius) * diffs[:, 3:].sum(axis=1)
    return np.concatenate([[0.0], fd])


def motion_summary(fd, threshold: float = 0.5) -> dict:
    """Summary of framewise displacement, as FEAT and fMRIPrep reports give.

    Parameters
    ----------
    fd : array-like
        Framewise displacement per volume (mm); the first value (0 by
        construction) is left out of the mean and maximum.
    threshold : float
        FD (mm) above which a volume is flagged.

    Returns
    -------
    dict
        ``n_volumes``, ``mean_fd``, ``max_fd``, ``median_fd`` (mm),
        ``fd_threshold``, ``n_above`` (volumes with FD > threshold),
        ``fraction_above`` and ``volumes_above`` (0-based indices).

    Examples
    --------
    >>> s = motion_summary([0.0, 0.2, 0.8, 0.1], threshold=0.5)
    >>> s["n_above"], s["volumes_above"], round(s["max_fd"], 1)
    (1, [2], 0.8)
    """
    fd = np.asarray(fd, dtype=float).ravel()
    tail = fd[1:] if fd.size > 1 else fd
    above = np.flatnonzero(fd > threshold)
    return {
        "n_volumes": int(fd.size),
        "mean_fd": float(tail.mean()) if tail.size else 0.0,
        "median_fd": float(np.median(tail)) if tail.size else 0.0,
        "max_fd": float(tail.max()) if tail.size else 0.0,
        "fd_threshold": float(threshold),
        "n_above": int(above.size),
        "fraction_above": float(above.size / fd.size) if fd.size else 0.0,
        "volumes_above": [int(i) for i in above],
    }


def motion_confounds(motion: pd.DataFrame, derivatives: bool = True) -> pd.DataFrame:
    """Motion regressors for ``FirstLevelModel.fit(confounds=...)``.

    Parameters
    ----------
    motion : DataFrame
        The six parameters (:data:`MOTION_COLUMNS`).
    derivatives : bool
        Add fMRIPrep's ``<name>_derivative1`` columns (backward differences,
        0 for the first volume), giving 12 regressors.

    Returns
    -------
    DataFrame
        One row per volume, default integer index.
    """
    out = motion.loc[:, list(MOTION_COLUMNS)].reset_index(drop=True).astype(float)
    if derivatives:
        deriv = out.diff().fillna(0.0)
        deriv.columns = [f"{c}_derivative1" for c in out.columns]
        out = pd.concat([out, deriv], axis=1)
    return out


# --------------------------------------------------------------------------- ANTs plumbing

def ants_version() -> str:
    """Installed ``antspyx`` version (``"not installed"`` when it is missing)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("antspyx")
    except PackageNotFoundError:
        return "not installed"


def _ants(n_threads: int | None = None):
    # ITK reads the thread count once, when ANTs first runs: set it before the import.
    if n_threads is not None:
        os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", str(int(n_threads)))
    try:
        import ants
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("preprocessing needs ANTsPy: pip install antspyx") from exc
    return ants


@contextmanager
def _ants_session(params: PreprocessParams):
    """Thread count, random seed and a scratch folder for ANTs's transform files.

    The seed is ANTs's documented ``ANTS_RANDOM_SEED`` environment variable, which ``antsRegistration`` reads
    on every call when no ``--random-seed`` is given (fMRIPrep seeds ANTs the same way). antspyx 0.6.3 has no
    ``random_seed`` argument to ``ants.registration`` any more; its ``ants.config.set_ants_deterministic``
    also forces one ITK thread and reseeds numpy's and Python's global generators, so it is not used.
    """
    _ants(params.n_threads)
    env = {"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": str(int(params.n_threads)),
           "ANTS_RANDOM_SEED": str(int(params.seed))}
    old = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        with tempfile.TemporaryDirectory(prefix="analysis-ants-") as scratch:
            yield Path(scratch)
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _to_ants(img):
    """3D nibabel image -> float ANTsImage, by ANTsPy's ``from_nibabel_nifti`` (RAS affine -> LPS origin,
    spacing and direction). It reads the geometry from a fresh header built from ``img.affine`` in mm: the
    caller's header is not touched (``from_nibabel_nifti`` would set unknown units in place, with a print)."""
    mm = nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine)
    mm.header.set_xyzt_units("mm", "sec")
    return _ants().from_nibabel_nifti(mm)


def _from_ants(image) -> nib.Nifti1Image:
    """ANTsImage (3D) -> nibabel image with a RAS affine (units mm), by ANTsPy's ``to_nibabel_nifti``."""
    return _ants().to_nibabel_nifti(image)


def _read_matrix(path) -> np.ndarray:
    """ANTs linear transform file -> RAS 4x4 point map (fixed -> moving)."""
    tx = _ants().read_transform(str(path))
    values = np.asarray(tx.parameters, dtype=float)
    centre = np.asarray(tx.fixed_parameters, dtype=float)
    linear = values[:9].reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = linear
    lps[:3, 3] = values[9:12] + centre - linear @ centre
    return _LPS @ lps @ _LPS


def _write_matrix(matrix, path) -> str:
    """RAS 4x4 point map -> ANTs AffineTransform file (for apply_transforms)."""
    ants = _ants()
    lps = _LPS @ np.asarray(matrix, dtype=float) @ _LPS
    tx = ants.create_ants_transform(transform_type="AffineTransform", precision="float",
                                    dimension=3, matrix=lps[:3, :3], offset=lps[:3, 3])
    ants.write_transform(tx, str(path))
    return str(path)


def _volumes(img):
    data = np.asarray(img.dataobj, dtype=np.float32)
    return [nib.Nifti1Image(data[..., k], img.affine) for k in range(data.shape[3])]


def _grid_centre(img) -> np.ndarray:
    centre_vox = (np.asarray(img.shape[:3], dtype=float) - 1) / 2
    return img.affine[:3, :3] @ centre_vox + img.affine[:3, 3]


def _normalize_intensity(image):
    """Scale an ANTsImage to [0, 1] (robust to run-wide intensity scale)."""
    return _ants().iMath(image, "Normalize")


# --------------------------------------------------------------------------- steps

def _register_rigid_volumes(volumes, fixed, params, scratch, tag):
    """Register every volume rigidly to ``fixed``; return matrices and file paths."""
    ants = _ants()
    fixed_ants = _normalize_intensity(_to_ants(fixed))
    matrices, paths = [], []
    for k, vol in enumerate(volumes):
        moving = _normalize_intensity(_to_ants(vol))
        reg = ants.registration(
            fixed_ants, moving, type_of_transform="Rigid",
            initial_transform="Identity",
            aff_metric="meansquares", aff_sampling=32,
            aff_random_sampling_rate=params.realign_sampling,
            aff_iterations=params.realign_iterations,
            aff_shrink_factors=params.realign_shrink_factors,
            aff_smoothing_sigmas=params.realign_smoothing_sigmas,
            outprefix=str(scratch / f"{tag}{k:04d}_"),
        )
        matrices.append(_read_matrix(reg["fwdtransforms"][0]))
        paths.append(reg["fwdtransforms"][0])
    return matrices, paths


def _realign(bold_img, params, scratch):
    """Realignment; returns (realigned_img, motion, matrices, transform files, reference)."""
    ants = _ants()
    volumes = _volumes(bold_img)
    n = len(volumes)
    first = volumes[n // 2] if params.realign_reference == "middle" else volumes[0]
    matrices, paths = _register_rigid_volumes(volumes, first, params, scratch, "pass1_")
    reference = first
    if params.realign_reference == "mean":
        resampled = [ants.apply_transforms(_to_ants(first), _to_ants(v), [p], interpolator="linear")
                     for v, p in zip(volumes, paths)]
        mean = np.mean([r.numpy() for r in resampled], axis=0)
        reference = nib.Nifti1Image(mean.astype(np.float32), first.affine)
        matrices, paths = _register_rigid_volumes(volumes, reference, params, scratch, "pass2_")
    ref_ants = _to_ants(reference)
    realigned = np.stack(
        [ants.apply_transforms(ref_ants, _to_ants(v), [p], interpolator="linear").numpy()
         for v, p in zip(volumes, paths)], axis=-1).astype(np.float32)
    realigned_img = nib.Nifti1Image(realigned, reference.affine)
    realigned_img.header.set_xyzt_units("mm", "sec")
    zooms = bold_img.header.get_zooms()
    if len(zooms) > 3:
        realigned_img.header.set_zooms(tuple(zooms[:3]) + (zooms[3],))
    motion = _motion_frame(matrices, _grid_centre(reference))
    return realigned_img, motion, matrices, paths


def realign(bold_img, params: PreprocessParams | None = None):
    """Rigid realignment of every volume to a reference (six parameters per volume).

    Parameters
    ----------
    bold_img : Nifti1Image
        4D native-space run.
    params : PreprocessParams, optional
        Uses ``realign_*``, ``n_threads`` and ``seed``.

    Returns
    -------
    realigned_img : Nifti1Image
        The run resampled onto the reference volume's grid (linear interpolation).
    motion : DataFrame
        :data:`MOTION_COLUMNS` per volume (mm, radians), relative to the reference;
        ``attrs["centre"]`` is the rotation centre (the reference grid's centre).
    """
    params = params or PreprocessParams()
    with _ants_session(params) as scratch:
        realigned_img, motion, _, _ = _realign(bold_img, params, scratch)
    return realigned_img, motion


def _registration(fixed_img, moving_img, kind, params, scratch, tag, mask_img=None,
                  iterations=(100, 50), sampling=0.5):
    ants = _ants()
    start = time.perf_counter()
    fixed = _normalize_intensity(_to_ants(fixed_img))
    moving = _normalize_intensity(_to_ants(moving_img))
    mask = _to_ants(mask_img) if mask_img is not None else None
    levels = len(iterations)
    common = dict(initial_transform=None, aff_metric="mattes", aff_sampling=32,
                  aff_random_sampling_rate=sampling, aff_iterations=tuple(iterations),
                  aff_shrink_factors=(4, 2, 1)[:levels], aff_smoothing_sigmas=(2, 1, 0)[:levels],
                  outprefix=str(scratch / tag), mask=mask)
    if kind == "SyN":
        # Affine first (own schedule), then SyN only, initialised by it.
        lin = ants.registration(fixed, moving, type_of_transform="Affine", **common)
        common.update(initial_transform=lin["fwdtransforms"][0], outprefix=str(scratch / f"{tag}syn_"))
        reg = ants.registration(fixed, moving, type_of_transform="SyNOnly", syn_metric="mattes",
                                reg_iterations=tuple(params.syn_iterations), **common)
        warp_path = [p for p in reg["fwdtransforms"] if p.endswith(".nii.gz")][0]
        warp_img = nib.load(warp_path)
        warp_img = nib.Nifti1Image(np.asarray(warp_img.dataobj), warp_img.affine, warp_img.header)
        matrix = _read_matrix(lin["fwdtransforms"][0])
        metric = "Mattes mutual information"
    else:
        reg = ants.registration(fixed, moving, type_of_transform=kind, **common)
        warp_img = None
        matrix = _read_matrix(reg["fwdtransforms"][0])
        metric = "Mattes mutual information"
    warped = _from_ants(reg["warpedmovout"])
    # Undo the [0, 1] normalisation for display: resample the original intensities.
    files = _transform_files(matrix, warp_img, scratch, f"{tag}apply_")
    warped = _from_ants(ants.apply_transforms(_to_ants(fixed_img), _to_ants(moving_img), files,
                                              interpolator="linear"))
    return Registration(kind=kind, matrix=matrix, warp_img=warp_img, warped_img=warped,
                        fixed_img=fixed_img, metric=metric,
                        seconds=time.perf_counter() - start)


def _transform_files(matrix, warp_img, scratch, tag) -> list[str]:
    """ANTs transform list (fixed -> moving point map order) for one Registration."""
    files = []
    if warp_img is not None:  # ANTs order: the warp acts on fixed-space points first
        warp_path = scratch / f"{tag}warp.nii.gz"
        nib.save(warp_img, warp_path)
        files.append(str(warp_path))
    files.append(_write_matrix(matrix, scratch / f"{tag}affine.mat"))
    return files


def coregister(mean_func_img, anat_img, params: PreprocessParams | None = None) -> Registration:
    """Rigid registration of the mean functional image to the anatomical image.

    Parameters
    ----------
    mean_func_img : Nifti1Image
        3D mean realigned functional image (moving).
    anat_img : Nifti1Image
        3D anatomical (T1-weighted) image (fixed).
    params : PreprocessParams, optional

    Returns
    -------
    Registration
        ``matrix`` maps anatomical-space mm to functional-space mm.
    """
    params = params or PreprocessParams()
    with _ants_session(params) as scratch:
        return _registration(anat_img, mean_func_img, "Rigid", params, scratch, "coreg_",
                             iterations=params.coregistration_iterations)


def normalise(anat_img, template_img, params: PreprocessParams | None = None,
              mask_img=None) -> Registration:
    """Register the anatomical image to the MNI152 template.

    Parameters
    ----------
    anat_img : Nifti1Image
        3D anatomical image (moving).
    template_img : Nifti1Image
        MNI152 template (fixed), e.g. ``nilearn.datasets.load_mni152_template(resolution=2)``.
    params : PreprocessParams, optional
        ``normalisation`` picks ``"Affine"``, ``"SyN"`` or ``"Rigid"``.
    mask_img : Nifti1Image, optional
        Template brain mask restricting the metric (useful when the anatomical
        image still has its skull and the template does not).

    Returns
    -------
    Registration
        ``matrix`` (and ``warp_img`` for SyN) map MNI mm to anatomical mm.
    """
    params = params or PreprocessParams()
    with _ants_session(params) as scratch:
        return _registration(template_img, anat_img, params.normalisation, params, scratch,
                             "norm_", mask_img=mask_img,
                             iterations=params.normalisation_iterations, sampling=0.25)


def _template(resolution: int):
    from nilearn import datasets

    template = datasets.load_mni152_template(resolution=resolution)
    mask = datasets.load_mni152_brain_mask(resolution=resolution)
    template = nib.Nifti1Image(np.asarray(template.dataobj, dtype=np.float32), template.affine)
    return template, mask


def _correlation(a_img, b_img, mask) -> float:
    a = np.asarray(a_img.dataobj, dtype=float)[mask]
    b = np.asarray(b_img.dataobj, dtype=float)[mask]
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _dice(a, b) -> float:
    total = a.sum() + b.sum()
    return float(2 * (a & b).sum() / total) if total else float("nan")


def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0


def preprocess(bold_img, anat_img, params: PreprocessParams | None = None) -> Preprocessed:
    """Realign, coregister, normalise to MNI152, resample once and smooth a native run.

    Parameters
    ----------
    bold_img : Nifti1Image
        4D native-space (scanner-space) BOLD run.
    anat_img : Nifti1Image
        3D T1-weighted anatomical image of the same session.
    params : PreprocessParams, optional

    Returns
    -------
    Preprocessed
        The MNI-space run (ready for ``FirstLevelModel`` with
        ``smoothing_fwhm=None``), motion parameters, FD, registrations, QC and timings.

    Examples
    --------
    >>> from native_sim import simulate_native_run  # tests/   # doctest: +SKIP
    >>> run = simulate_native_run(n_scans=20)                    # doctest: +SKIP
    >>> out = preprocess(run.bold_img, run.anat_img)             # doctest: +SKIP
    >>> out.bold_img.shape                                       # doctest: +SKIP
    (67, 79, 64, 20)
    """
    from nilearn import __version__ as nilearn_version
    from nilearn.image import smooth_img

    params = params or PreprocessParams()
    if bold_img.ndim != 4:
        raise ValueError(f"bold_img must be 4D, got shape {bold_img.shape}")
    if anat_img.ndim != 3:
        raise ValueError(f"anat_img must be 3D, got shape {anat_img.shape}")
    ants = _ants(params.n_threads)
    timings = {}
    start = t0 = time.perf_counter()
    with _ants_session(params) as scratch:
        realigned_img, motion, matrices, motion_files = _realign(bold_img, params, scratch)
        timings["realign"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        mean_func_img = nib.Nifti1Image(np.asarray(realigned_img.dataobj).mean(axis=3),
                                        realigned_img.affine)
        coreg = _registration(anat_img, mean_func_img, "Rigid", params, scratch, "coreg_",
                              iterations=params.coregistration_iterations)
        timings["coregister"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        template_img, mask_img = _template(params.target_resolution)
        norm_template, norm_mask = _template(params.normalisation_resolution)
        norm = _registration(norm_template, anat_img, params.normalisation, params, scratch,
                             "norm_", mask_img=norm_mask,
                             iterations=params.normalisation_iterations, sampling=0.25)
        timings["normalise"] = time.perf_counter() - t0

        # One-shot resampling: MNI point -> anat (norm) -> mean func (coreg) -> volume k (motion).
        t0 = time.perf_counter()
        chain = _transform_files(norm.matrix, norm.warp_img, scratch, "chain_norm_") + \
            _transform_files(coreg.matrix, None, scratch, "chain_coreg_")
        target = _to_ants(template_img)
        volumes = _volumes(bold_img)
        data = np.stack([ants.apply_transforms(target, _to_ants(v), chain + [p],
                                               interpolator="linear").numpy()
                         for v, p in zip(volumes, motion_files)], axis=-1).astype(np.float32)
        anat_mni = ants.apply_transforms(target, _to_ants(anat_img), chain[:len(chain) - 1],
                                         interpolator="linear")
        timings["resample"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    zooms = tuple(float(z) for z in template_img.header.get_zooms()[:3])
    t_r = float(bold_img.header.get_zooms()[3]) if len(bold_img.header.get_zooms()) > 3 else 1.0
    mni_img = nib.Nifti1Image(data, template_img.affine)
    mni_img.header.set_xyzt_units("mm", "sec")
    mni_img.header.set_zooms(zooms + (t_r,))
    mean_img = nib.Nifti1Image(data.mean(axis=3), template_img.affine)
    if params.smoothing_fwhm:
        mni_img = smooth_img(mni_img, params.smoothing_fwhm)
        mni_img = nib.Nifti1Image(np.asarray(mni_img.dataobj, dtype=np.float32), mni_img.affine,
                                  mni_img.header)
    timings["smooth"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - start

    fd = framewise_displacement(motion, radius=params.fd_radius)
    brain = np.asarray(mask_img.dataobj) > 0
    mean_data = np.asarray(mean_img.dataobj)
    func_mask = mean_data > 0.2 * np.percentile(mean_data[brain], 90) if brain.any() else brain
    anat_mni_img = _from_ants(anat_mni)
    qc = {
        **motion_summary(fd, threshold=params.fd_threshold),
        "max_abs_translation_mm": float(np.abs(motion[list(MOTION_COLUMNS[:3])]).to_numpy().max()),
        "max_abs_rotation_deg": float(np.degrees(np.abs(motion[list(MOTION_COLUMNS[3:])]).to_numpy().max())),
        "mask_dice": _dice(func_mask, brain),
        "anat_template_correlation": _correlation(anat_mni_img, template_img, brain),
        "peak_rss_mb": _peak_rss_mb(),
    }
    return Preprocessed(
        bold_img=mni_img, mean_img=mean_img, anat_mni_img=anat_mni_img,
        template_img=template_img, mask_img=mask_img, realigned_img=realigned_img,
        mean_func_img=mean_func_img, anat_img=anat_img, motion=motion, fd=fd,
        coregistration=coreg, normalisation=norm, qc=qc, timings=timings, params=params,
        software={"antspyx": ants_version(), "nilearn": nilearn_version},
    )


def to_mni(img, preprocessed: Preprocessed, *, volume: int | None = None,
           interpolation: str = "linear") -> nib.Nifti1Image:
    """Resample a native functional-space 3D image into MNI space with the fitted transforms.

    Parameters
    ----------
    img : Nifti1Image
        3D image in the space of the realignment reference (``volume=None``) or
        of one acquired volume (``volume=k``), e.g. a native mask or map.
    preprocessed : Preprocessed
        Output of :func:`preprocess`.
    volume : int, optional
        Index of the volume whose head position ``img`` is in.
    interpolation : str
        ANTs interpolator (``"linear"``, ``"nearestNeighbor"``, ...).

    Returns
    -------
    Nifti1Image
        On ``preprocessed.template_img``'s grid.
    """
    ants = _ants(preprocessed.params.n_threads)
    norm, coreg = preprocessed.normalisation, preprocessed.coregistration
    with _ants_session(preprocessed.params) as scratch:
        files = _transform_files(norm.matrix, norm.warp_img, scratch, "norm_") + \
            _transform_files(coreg.matrix, None, scratch, "coreg_")
        if volume is not None:
            motion = preprocessed.motion
            matrix = rigid_matrix(motion.iloc[int(volume)][list(MOTION_COLUMNS)].to_numpy(),
                                  motion.attrs["centre"])
            files.append(_write_matrix(matrix, scratch / "motion.mat"))
        out = ants.apply_transforms(_to_ants(preprocessed.template_img), _to_ants(img), files,
                                    interpolator=interpolation)
        return _from_ants(out)
