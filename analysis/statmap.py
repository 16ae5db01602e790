"""A report from an existing statistical map (no time series).

Accepts a z map or a t map with its degrees of freedom (SPM ``spmT_0001.nii``, FSL
``zstat1.nii.gz``/``tstat1.nii.gz``, a nilearn z map) in MNI space. The t values are converted
to z through their p-values; a map that does not cover the MNI152 brain is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import special, stats

from .config import Config
from .data import DataError, _load_nifti

__all__ = ["StatMap", "load_statmap", "t_to_z", "mni_coverage", "MIN_COVERAGE"]

MIN_COVERAGE = 0.8  # share of the MNI152 brain the map must cover


@dataclass(frozen=True)
class StatMap:
    """The map to report, converted to z, with its provenance."""

    z_img: nib.Nifti1Image
    mask_img: nib.Nifti1Image
    path: str
    stat: str  # "z" or "t"
    dof: float
    contrast: str
    direction: str
    source: str
    space: str
    coverage: float  # share of the MNI152 brain mask inside the map's non-empty voxels

    @property
    def conversion(self) -> str:
        if self.stat == "z":
            return "The map holds z statistics and was used as it is."
        return (f"The map holds t statistics with {self.dof:g} degrees of freedom; each t was converted to the z "
                "value with the same one-sided p-value.")


def t_to_z(t: np.ndarray, dof: float) -> np.ndarray:
    """z with the same tail probability as t (stable in the far tails, sign kept)."""
    t = np.asarray(t, dtype=float)
    log_sf = stats.t.logsf(np.abs(t), dof)
    z = -special.ndtri_exp(log_sf)  # log(Phi(-z)) = log_sf
    return np.sign(t) * np.abs(z)


def mni_coverage(img: nib.Nifti1Image, brain: nib.Nifti1Image | None = None) -> float:
    """Share of the MNI152 brain mask (2 mm) that falls on finite, non-zero voxels of ``img``."""
    if brain is None:
        from nilearn.datasets import load_mni152_brain_mask

        brain = load_mni152_brain_mask(resolution=2)
    ijk = np.argwhere(np.asarray(brain.dataobj) > 0)
    xyz = nib.affines.apply_affine(brain.affine, ijk)
    vox = np.rint(nib.affines.apply_affine(np.linalg.inv(img.affine), xyz)).astype(int)
    data = np.asarray(img.dataobj, dtype=np.float32)
    inside = np.all((vox >= 0) & (vox < np.array(data.shape[:3])), axis=1)
    values = np.zeros(len(vox), dtype=np.float32)
    values[inside] = data[tuple(vox[inside].T)]
    return float(np.mean(inside & np.isfinite(values) & (values != 0)))


def load_statmap(config: Config) -> StatMap:
    """Load, check and convert the map named in ``[statmap]``.

    Raises
    ------
    DataError
        Unreadable or non-3D map, a t map without degrees of freedom, a non-MNI space, or a map
        that does not cover the MNI152 brain.
    """
    from nilearn.datasets import load_mni152_brain_mask
    from nilearn.image import resample_to_img

    cfg = config.statmap
    if not cfg.path:
        raise DataError(f"{config.source}: statmap.path is empty; point it at a z or t map (NIfTI)")
    img = _load_nifti(cfg.path)
    if img.ndim == 4 and img.shape[3] == 1:
        img = nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine, img.header)
    if img.ndim != 3:
        raise DataError(f"{cfg.path}: a 3D statistical map is needed but the image is {img.ndim}D {img.shape}; "
                        "pass one contrast's map")
    if not cfg.space.upper().startswith("MNI"):
        raise DataError(f"{cfg.path}: statmap.space = {cfg.space!r}; the report needs a map in MNI space "
                        "(atlas labels and DMN masks are in MNI): normalise the map first")
    values = np.asarray(img.dataobj, dtype=np.float64)
    informative = values[np.isfinite(values) & (values != 0)]
    if informative.size == 0:
        raise DataError(f"{cfg.path}: the map holds no non-zero finite value (all zero or NaN); export the "
                        "contrast's statistical map again")
    if np.unique(informative).size <= 2 and np.all(np.isin(np.unique(informative), (1.0, -1.0, 255.0))):
        raise DataError(f"{cfg.path}: the map holds only the values {sorted(set(np.unique(informative)) | {0.0})}, "
                        "so it is a mask, not a statistical map; point statmap.path at the z or t map")
    mni_brain = load_mni152_brain_mask(resolution=2)
    coverage = mni_coverage(img, mni_brain)
    if coverage < MIN_COVERAGE:
        raise DataError(f"{cfg.path}: the map covers only {100 * coverage:.0f} % of the MNI152 brain; it is "
                        "probably not in MNI space (or is masked to a small region): normalise it to MNI152 first")
    data = np.asarray(img.dataobj, dtype=np.float64)
    finite = np.isfinite(data) & (data != 0)
    if cfg.stat == "t":
        if cfg.dof <= 0:
            raise DataError(f"{config.source}: statmap.stat = \"t\" needs statmap.dof (the degrees of freedom "
                            "of the t test, e.g. n_scans - rank(design))")
        z = np.zeros_like(data)
        z[finite] = t_to_z(data[finite], cfg.dof)
    else:
        z = np.where(finite, data, 0.0)
    z_img = nib.Nifti1Image(z.astype(np.float32), img.affine)
    brain = resample_to_img(mni_brain, z_img, interpolation="nearest",
                            force_resample=True, copy_header=True)
    mask = (np.asarray(brain.dataobj) > 0) & finite
    direction = cfg.direction or f"{cfg.contrast} > baseline"
    return StatMap(z_img=z_img, mask_img=nib.Nifti1Image(mask.astype(np.uint8), img.affine),
                   path=str(Path(cfg.path).resolve()), stat=cfg.stat, dof=cfg.dof, contrast=cfg.contrast,
                   direction=direction, source=cfg.source or Path(cfg.path).name, space=cfg.space,
                   coverage=coverage)
