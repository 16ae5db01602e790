"""Design matrix, first-level fit and contrasts (by condition name, never by hand-typed vector)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn.glm.first_level import FirstLevelModel, make_first_level_design_matrix  # noqa: F401

from .config import GLMConfig
from .contrasts import ContrastError, entity
from .contrasts import contrast_vector as _parse

__all__ = ["ContrastError", "ContrastMaps", "make_design", "check_contrast", "contrast_matrix", "fit",
           "compute_contrasts", "entity"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContrastMaps:
    """The maps of one contrast (all 3D images on the model's mask grid)."""

    name: str
    expression: str
    z_img: nib.Nifti1Image
    stat_img: nib.Nifti1Image
    effect_img: nib.Nifti1Image
    variance_img: nib.Nifti1Image
    p_img: nib.Nifti1Image
    vector: tuple[float, ...]


def make_design(events: pd.DataFrame, n_scans: int, glm: GLMConfig,
                confounds: pd.DataFrame | None = None) -> pd.DataFrame:
    """Build the design matrix: conditions convolved with the HRF, drift regressors, constant.

    Frame times are at the start of each scan (``slice_time_ref = 0``), as nilearn's default.
    """
    if not glm.t_r > 0:
        raise ValueError("glm.t_r must be resolved from the data before building the design (got 0)")
    frame_times = np.arange(n_scans) * glm.t_r
    drift = None if glm.drift_model == "none" else glm.drift_model
    return make_first_level_design_matrix(
        frame_times, events=events, hrf_model=glm.hrf_model, drift_model=drift, high_pass=glm.high_pass,
        add_regs=None if confounds is None else confounds.to_numpy(),
        add_reg_names=None if confounds is None else list(confounds.columns),
    )


def check_contrast(expression: str, design: pd.DataFrame, conditions: list[str], name: str = "") -> None:
    """Raise :class:`ContrastError` unless ``expression`` is a contrast over the design's columns."""
    vec = contrast_vector(expression, design, name, conditions)
    if not np.any(vec):
        raise ContrastError(f"contrast {name or expression!r} has all-zero weights; it tests nothing")


def describe_direction(expression: str, conditions: list[str]) -> str:
    """What a positive value of the contrast means, e.g. ``listening > rest``.

    A single condition is compared with the implicit baseline (rest); ``A - B`` reads ``A > B``.
    """
    from .contrasts import contrast_vector as parse

    try:
        vec = parse(expression, conditions)
    except ContrastError:  # it also uses confound or drift columns
        return f"{expression.strip()} > 0"
    terms = {c: w for c, w in zip(conditions, vec) if w}
    if len(terms) == 1 and list(terms.values()) == [1.0]:
        return f"{next(iter(terms))} > rest"
    if len(terms) == 2 and sorted(terms.values()) == [-1.0, 1.0]:
        pos = next(c for c, w in terms.items() if w > 0)
        neg = next(c for c, w in terms.items() if w < 0)
        return f"{pos} > {neg}"
    return f"{expression.strip()} > 0"


def contrast_vector(expression: str, design: pd.DataFrame, name: str = "",
                    conditions: list[str] | None = None) -> np.ndarray:
    """Weights over the design columns for a contrast written by condition name (our parser, no eval)."""
    return _parse(expression, list(design.columns), name, conditions)


def contrast_matrix(contrasts: dict[str, str], design: pd.DataFrame) -> pd.DataFrame:
    """Contrasts x design columns weight table (for the contrast-matrix figure and the methods)."""
    table = pd.DataFrame({name: contrast_vector(expr, design) for name, expr in contrasts.items()},
                         index=design.columns).T
    return table.rename_axis(index="contrast", columns=None)


def fit(bold_img, design: pd.DataFrame, glm: GLMConfig, mask_img=None) -> FirstLevelModel:
    """Fit the first-level GLM with the configured noise model (the ``[glm]`` settings, ``config.glm``).

    Parameters
    ----------
    bold_img : Nifti1Image
        4D run.
    design : DataFrame
        From :func:`make_design`.
    glm : GLMConfig
        ``t_r``, ``hrf_model``, ``drift_model``, ``high_pass``, ``smoothing_fwhm``, ``standardize``,
        ``signal_scaling``, ``n_jobs``, ``noise_model``, ``rho_fwhm``.
    mask_img : Nifti1Image, optional
        Brain mask; ``None`` lets nilearn compute an EPI mask.
    """
    kwargs = dict(t_r=glm.t_r, hrf_model=glm.hrf_model, drift_model=glm.drift_model, high_pass=glm.high_pass,
                  smoothing_fwhm=glm.smoothing_fwhm or None, standardize=glm.standardize,
                  signal_scaling=glm.signal_scaling, n_jobs=glm.n_jobs, mask_img=mask_img,
                  minimize_memory=False)
    from .noise import fit_first_level

    kwargs.pop("mask_img")
    return fit_first_level(bold_img, design, mask_img, noise_model=glm.noise_model, rho_fwhm=glm.rho_fwhm or None,
                           **kwargs)


def compute_contrasts(model: FirstLevelModel, design: pd.DataFrame, contrasts: dict[str, str],
                      conditions: list[str]) -> dict[str, ContrastMaps]:
    """Compute every configured contrast; all maps come from one call per contrast."""
    out = {}
    for name, expr in contrasts.items():
        check_contrast(expr, design, conditions, name)
        vec = contrast_vector(expr, design, name, conditions)
        maps = model.compute_contrast(vec, stat_type="t", output_type="all")  # numbers only, never a string
        out[name] = ContrastMaps(name=name, expression=expr, z_img=maps["z_score"], stat_img=maps["stat"],
                                 effect_img=maps["effect_size"], variance_img=maps["effect_variance"],
                                 p_img=maps["p_value"], vector=tuple(vec))
    return out
