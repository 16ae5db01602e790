"""A report from an existing statistical map (no time series).

Accepts a z map or a t map with its degrees of freedom (SPM ``spmT_0001.nii``, FSL
``zstat1.nii.gz``/``tstat1.nii.gz``, a nilearn z map) in MNI space. The t values are converted
to z through their p-values; a map that does not cover the MNI152 brain is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import special, stats

from .config import Config
from .data import DataError, _load_nifti

__all__ = ["StatMap", "load_statmap", "t_to_z", "mni_coverage", "header_dof", "MIN_COVERAGE"]

MIN_COVERAGE = 0.8  # share of the MNI152 brain the map must cover
_SPM_DESCRIP = re.compile(r"SPM\{(?P<stat>[A-Za-z])_\[(?P<dof>[0-9.]+)(?:,\s*(?P<dof2>[0-9.]+))?\]\}")


def header_dof(img: nib.Nifti1Image) -> tuple[str, float, str] | None:
    """The statistic and degrees of freedom SPM writes in the header's ``descrip`` field.

    SPM saves ``spmT_0001.nii`` with ``descrip = "SPM{T_[73.0]} - contrast 1: ..."`` (an F map:
    ``SPM{F_[1.0,73.0]}``). Returns ``(stat, dof, descrip)``, e.g. ``("t", 73.0, "SPM{T_[73.0]} ...")``, with
    ``stat`` lower case and ``dof`` the error degrees of freedom; None when the field holds no such tag.
    """
    raw = img.header.get("descrip") if hasattr(img.header, "get") else None
    try:
        descrip = bytes(np.asarray(raw).item() if raw is not None else b"").decode("latin-1").strip("\x00 ")
    except (AttributeError, TypeError, ValueError):
        return None
    m = _SPM_DESCRIP.search(descrip)
    if m is None:
        return None
    return m["stat"].lower(), float(m["dof2"] or m["dof"]), descrip


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
    dof_source: str = ""  # where the degrees of freedom came from ("the header's descrip field ..." or the config)

    @property
    def conversion(self) -> str:
        if self.stat == "z":
            return "The map holds z statistics and was used as it is."
        src = f" ({self.dof_source})" if self.dof_source else ""
        return (f"The map holds t statistics with {self.dof:g} degrees of freedom{src}; each t was converted to "
                "the z value with the same one-sided p-value.")


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
    dof, dof_source = cfg.dof, "statmap.dof in the configuration" if cfg.dof > 0 else ""
    spm = header_dof(img)
    if spm is not None:
        stat, hdr_dof, descrip = spm
        tag = descrip.split()[0]
        if stat != "t":
            raise DataError(f"{cfg.path}: the header says this is an SPM {stat.upper()} map ({tag}); the report "
                            "needs a t or z map: export the contrast's spmT image")
        if cfg.stat != "t":
            raise DataError(f"{cfg.path}: the header says this is an SPM t map ({tag}) but statmap.stat = "
                            f"{cfg.stat!r}; set statmap.stat = \"t\"")
        if cfg.dof > 0 and not np.isclose(cfg.dof, hdr_dof, rtol=0, atol=1e-6):
            raise DataError(f"{cfg.path}: the header gives {hdr_dof:g} degrees of freedom ({tag}) but statmap.dof "
                            f"= {cfg.dof:g} in the config; set statmap.dof = {hdr_dof:g} or remove it")
        dof, dof_source = hdr_dof, f"read from the header's description field, {tag}"
    if cfg.stat == "t":
        if dof <= 0:
            raise DataError(f"{config.source}: statmap.stat = \"t\" needs statmap.dof (the degrees of freedom "
                            "of the t test, e.g. n_scans - rank(design)); the map's header does not give them")
        z = np.zeros_like(data)
        z[finite] = t_to_z(data[finite], dof)
    else:
        z = np.where(finite, data, 0.0)
    brain = resample_to_img(mni_brain, nib.Nifti1Image(z.astype(np.float32), img.affine), interpolation="nearest",
                            force_resample=True, copy_header=True)
    mask = (np.asarray(brain.dataobj) > 0) & finite
    # one masked map: values outside the brain mask never reach a threshold, a table or a file
    z_img = nib.Nifti1Image(np.where(mask, z, 0.0).astype(np.float32), img.affine)
    direction = cfg.direction or f"{cfg.contrast} > baseline"
    return StatMap(z_img=z_img, mask_img=nib.Nifti1Image(mask.astype(np.uint8), img.affine),
                   path=str(Path(cfg.path).resolve()), stat=cfg.stat, dof=dof if cfg.stat == "t" else 0.0,
                   contrast=cfg.contrast, direction=direction, source=cfg.source or Path(cfg.path).name,
                   space=cfg.space, coverage=coverage, dof_source=dof_source if cfg.stat == "t" else "")
