"""Temporal noise models for the first-level GLM, including a calibrated AR(1).

nilearn's ``noise_model="ar1"`` estimates the AR(1) coefficient of each voxel
from the lag-1 autocorrelation of its OLS residuals. With few scans and many
drift regressors those residuals are strongly biased towards negative
autocorrelation (the residual-forming matrix ``R = I - X pinv(X)`` removes
low frequencies), and the per-voxel estimate is noisy. On pure noise shaped
like the reference run (84 scans, TR 7 s, 11 cosine drifts) the z map of the
block contrast then has an SD of about 1.17 (white noise) to 1.3 (AR(1)
noise): p-values are too small.

``"ar1_bc"`` (the project default) corrects the bias and the noise:

1. fit OLS (nilearn's :class:`~nilearn.glm.regression.OLSModel`, via
   ``FirstLevelModel(noise_model="ols")``) and take the lag-1 autocorrelation
   ``q = sum r_t r_(t+1) / sum r_t^2`` of each voxel's residuals;
2. remove the bias exactly for an AR(1) process: find ``rho`` such that the
   expected residual autocorrelation ``tr(R D1 R V(rho)) / (2 tr(R V(rho)))``
   equals ``q``, where ``V(rho)`` is the AR(1) correlation matrix and ``D1``
   has ones on the first off-diagonals. This is the bias correction of
   Worsley et al. (2002, fmristat) with the full AR(1) covariance in place of
   its first-order (banded) approximation, which under-corrects for rho > 0.2;
3. smooth ``q`` spatially inside the mask (Gaussian, ``rho_fwhm`` mm, 15 mm as
   in fmristat) before step 2, which removes most of the estimation noise but
   keeps regional differences of the autocorrelation;
4. bin ``rho`` to 0.01 and fit nilearn's :class:`~nilearn.glm.regression.ARModel`
   per bin, exactly as :func:`nilearn.glm.first_level.run_glm` does, so
   ``labels_`` / ``results_`` have nilearn's own layout and
   ``compute_contrast`` works unchanged.

``"ar1_pooled"`` is the SPM-style alternative (Friston et al., 2002): one
bias-corrected AR(1) coefficient for the whole mask. It is calibrated when the
autocorrelation is the same everywhere, and is not when it varies.

Examples
--------
>>> model = fit_first_level(bold_img, design, mask_img, t_r=7.0, noise_model="ar1_bc")  # doctest: +SKIP
>>> z_img = model.compute_contrast("listening", output_type="z_score")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

# nilearn.glm (and scikit-learn behind it) is imported only when a model is fitted, so that
# ``NOISE_MODELS`` (read by the config and the report) costs nothing to import.

__all__ = ["NoiseModel", "NOISE_MODELS", "DEFAULT_NOISE_MODEL", "DEFAULT_RHO_FWHM",
           "CalibratedFirstLevelModel", "fit_first_level", "fit_noise_model", "check_noise_model",
           "bias_corrected_ar1", "model_data", "model_residuals", "run_glm_ar1", "estimate_rho", "t_contrast_z",
           "model_residual_rows", "BLAS_THREADS", "blas_threads", "ProjectedData", "MatrixGLM", "fit_matrix"]


@dataclass(frozen=True)
class NoiseModel:
    """A noise model the report can name: one-line description and the pandoc citation keys."""

    name: str
    description: str
    citations: tuple[str, ...] = ()

    @property
    def cited_description(self) -> str:
        """The description followed by its pandoc citations, e.g. ``an AR(1) model ... [@worsley2002]``."""
        cites = "; ".join(f"@{k}" for k in self.citations)
        return self.description + (f" [{cites}]" if cites else "")


NOISE_MODELS: dict[str, NoiseModel] = {
    # descriptions are noun phrases that read after "fitted with ..."
    "ols": NoiseModel("ols", "ordinary least squares, which assumes temporally white noise"),
    "ar1": NoiseModel("ar1", "nilearn's AR(1) model, whose autocorrelation is taken voxel by voxel from "
                             "the OLS residuals without bias correction"),
    "ar1_bc": NoiseModel("ar1_bc", "an AR(1) model whose autocorrelation is bias-corrected through the "
                                   "residual-forming matrix and smoothed spatially",
                         ("worsley2002",)),
    "ar1_pooled": NoiseModel("ar1_pooled", "an AR(1) model with one bias-corrected autocorrelation pooled "
                                           "over all voxels of the mask, as in SPM",
                             ("friston2002",)),
}
DEFAULT_NOISE_MODEL = "ar1_bc"
DEFAULT_RHO_FWHM = 15.0  # mm, fmristat's default FWHM for smoothing the autocorrelation
_CALIBRATED = ("ar1_bc", "ar1_pooled")

BLAS_THREADS: int | None = 1
"""BLAS threads while fitting (None: leave BLAS alone).

The fits multiply tall data matrices by small design matrices, bin by bin; OpenBLAS threads cost more
than they gain there (on a busy 2-core machine, 10 to 30 times more), and the last bits of the
results depend on the number of threads. One thread makes the fits faster and their results
independent of the machine's core count."""


def blas_threads(limit: int | None = None):
    """Context manager limiting BLAS threads to ``limit`` (default :data:`BLAS_THREADS`)."""
    limit = BLAS_THREADS if limit is None else limit
    if not limit:
        return contextlib.nullcontext()
    controller = _threadpool_controller()
    if controller is None:  # pragma: no cover
        return contextlib.nullcontext()
    return controller.limit(limits=limit, user_api="blas")


@functools.lru_cache(maxsize=1)
def _threadpool_controller():
    """One threadpoolctl controller per process: finding the BLAS libraries takes milliseconds per call."""
    try:
        from threadpoolctl import ThreadpoolController  # a dependency of scikit-learn, hence of nilearn
    except ImportError:  # pragma: no cover
        return None
    return ThreadpoolController()


def _blas_limited(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with blas_threads():
            return func(*args, **kwargs)
    return wrapper
_RHO_LIMITS = (-0.9, 0.95)


def check_noise_model(noise_model: str) -> str:
    """Return ``noise_model`` if it is known, else raise ``ValueError`` naming the valid choices."""
    if noise_model not in NOISE_MODELS:
        raise ValueError(f"unknown noise_model {noise_model!r}; valid choices: "
                         + ", ".join(repr(k) for k in NOISE_MODELS))
    return noise_model


# --------------------------------------------------------------------------------------------
# bias-corrected AR(1) coefficient
# --------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=32)
def _bias_table(design_bytes: bytes, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Expected lag-1 autocorrelation of OLS residuals as a function of the true AR(1) rho."""
    X = np.frombuffer(design_bytes, dtype=np.float64).reshape(shape)
    n = X.shape[0]
    R = np.eye(n) - X @ np.linalg.pinv(X)
    D1 = np.eye(n, k=1) + np.eye(n, k=-1)
    S1 = R @ D1 @ R
    lags = np.arange(n)
    # tr(A V(rho)) = sum_k rho^k * (sum of the +-k diagonals of A), with V(rho)_ij = rho^|i-j|
    diag0 = np.array([np.trace(R, k) + (np.trace(R, -k) if k else 0.0) for k in lags])
    diag1 = np.array([np.trace(S1, k) + (np.trace(S1, -k) if k else 0.0) for k in lags])
    grid = np.linspace(*_RHO_LIMITS, 742)
    powers = np.power.outer(grid, lags)
    expected = (powers @ diag1) / (2.0 * (powers @ diag0))
    if not np.all(np.diff(expected) > 0):  # pragma: no cover - would need a pathological design
        raise ValueError("residual autocorrelation is not monotonic in rho for this design")
    return expected, grid


def bias_corrected_ar1(lag1_autocorr: np.ndarray, design: np.ndarray) -> np.ndarray:
    """AR(1) coefficient(s) whose OLS residuals have, on average, the given lag-1 autocorrelation.

    Parameters
    ----------
    lag1_autocorr : array
        ``sum r_t r_(t+1) / sum r_t^2`` of OLS residuals ``r`` (per voxel, pooled or smoothed).
    design : array of shape (n_scans, n_regressors)

    Returns
    -------
    array
        Bias-corrected rho, clipped to [-0.9, 0.95].
    """
    X = np.ascontiguousarray(design, dtype=np.float64)
    expected, grid = _bias_table(X.tobytes(), X.shape)
    return np.interp(lag1_autocorr, expected, grid)


def _lag1_autocorr(residuals: np.ndarray) -> np.ndarray:
    num = np.einsum("tv,tv->v", residuals[1:], residuals[:-1])
    den = np.einsum("tv,tv->v", residuals, residuals)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _smooth_in_mask(values: np.ndarray, mask_img, fwhm: float) -> np.ndarray:
    """Gaussian smoothing of a masked map, normalised by the smoothed mask (no leakage from outside).

    ``values`` are in nilearn's masker order (the mask's nonzero voxels in C order), and so is the result.
    """
    from scipy.ndimage import gaussian_filter

    inside = np.asarray(mask_img.dataobj) != 0
    affine = mask_img.affine
    voxel_size = np.sqrt(np.sum(affine[:3, :3] ** 2, axis=0))
    sigma = fwhm / np.sqrt(8 * np.log(2)) / voxel_size
    data = np.zeros(inside.shape)
    data[inside] = values
    num = gaussian_filter(data, sigma, mode="constant")
    den = gaussian_filter(inside.astype(np.float64), sigma, mode="constant")
    smooth = np.divide(num, den, out=np.zeros_like(num), where=den > 1e-8)
    return smooth[inside]


def _groups(codes: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """Column indices of each group ``0..n_groups-1``, in increasing order (as a boolean mask would give)."""
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(n_groups + 1))
    return [order[bounds[g]:bounds[g + 1]] for g in range(n_groups)]


def _fit_bins(Y: np.ndarray, X: np.ndarray, values: np.ndarray, unique: np.ndarray, codes: np.ndarray,
              n_jobs: int) -> list:
    """One nilearn ARModel fit per group of voxels sharing an AR coefficient (``values[g]``).

    Integer-indexed columns in increasing order select exactly what ``Y[:, labels == label]`` selects, without
    a string comparison over all voxels per bin.
    """
    groups = _groups(codes, len(unique))
    if n_jobs == 1:
        return [_ar_fit(X, values[g[0]], Y[:, g]) for g in groups]
    from joblib import Parallel, delayed

    return Parallel(n_jobs=n_jobs)(delayed(_ar_fit)(X, values[g[0]], Y[:, g]) for g in groups)


def _fit_ar1_bins(Y: np.ndarray, X: np.ndarray, rho: np.ndarray, bins: int, n_jobs: int):
    """Bin rho and fit one nilearn ARModel per bin: ``run_glm``'s layout (labels, {label: results})."""
    binned = np.round(np.asarray(rho, dtype=float) * bins) / bins + 0.0  # no '-0.00' label
    width = max(2, len(str(bins)) - 1)
    values, codes = np.unique(binned, return_inverse=True)
    names = np.array([f"{v:.{width}f}" for v in values])
    labels = names[codes.ravel()]
    unique, codes = np.unique(labels, return_inverse=True)  # the labels' (string) order, as before
    fits = _fit_bins(Y, X, binned, unique, codes.ravel(), n_jobs)
    return labels, dict(zip(unique, fits, strict=True)), binned


def _ar_fit(X, rho, Y):
    from nilearn.glm.regression import ARModel

    return ARModel(X, rho).fit(Y)


def _yule_walker_ar1(x: np.ndarray) -> np.ndarray:
    """nilearn's ``_yule_walker(x, 1)``, with the same arithmetic, minus a ``toeplitz`` call per voxel.

    For order 1 the Toeplitz matrix of each voxel is ``[[r0]]``; the batched solve gets the same
    (n, 1, 1) array nilearn builds, so the coefficients are bit-identical.
    """
    denom = x.shape[-1] - np.arange(2)
    n = np.prod(np.array(x.shape[:-1], int))
    r = np.zeros((n, 2), np.float64)
    y = x - x.mean()
    y = y.reshape(n, x.shape[-1])
    r[:, 0] += (y[:, np.newaxis, :] @ y[:, :, np.newaxis])[:, 0, 0]
    r[:, 1] += (y[:, np.newaxis, 0:-1] @ y[:, 1:, np.newaxis])[:, 0, 0]
    r /= denom * x.shape[-1]
    rt = np.ascontiguousarray(r[:, :1, np.newaxis])
    rho = np.linalg.solve(rt, r[:, 1:, None])[..., 0]
    return rho.reshape((*x.shape[:-1], 1))


def run_glm_ar1(Y: np.ndarray, X: np.ndarray, bins: int = 100, n_jobs: int = 1, ols_result=None):
    """``nilearn.glm.first_level.run_glm(Y, X, noise_model="ar1", bins=bins)``, bit-identical and faster.

    Same OLS fit, same Yule-Walker coefficients (without nilearn's per-voxel ``toeplitz``), same
    truncation to ``1 / bins``, same string labels and one ``ARModel`` fit per label on the same columns.

    Parameters
    ----------
    ols_result : RegressionResults, optional
        ``OLSModel(X).fit(Y)`` when already computed (e.g. by a FirstLevelModel fitted with ``"ols"``).
    """
    if ols_result is None:
        from nilearn.glm.regression import OLSModel

        ols_result = OLSModel(X).fit(Y)
    ar_coef = estimate_rho(Y, X, "ar1", bins=bins, ols_residuals=ols_result.residuals)
    values, codes = np.unique(ar_coef, return_inverse=True)
    labels = np.array([str(v) for v in values])[codes.ravel()] if values.size else np.array([], dtype=str)
    unique, codes = np.unique(labels, return_inverse=True)
    fits = _fit_bins(Y, X, ar_coef, unique, codes.ravel(), n_jobs)
    return labels, dict(zip(unique, fits, strict=True))


def _ols_residuals(Y: np.ndarray, X: np.ndarray) -> np.ndarray:
    """``Y - X pinv(X) Y``: the residuals of nilearn's ``OLSModel(X).fit(Y)``, without its result object."""
    from scipy import linalg

    return Y - X @ (linalg.pinv(X) @ Y)


def estimate_rho(Y: np.ndarray, X: np.ndarray, noise_model: str, *, mask_img=None,
                 rho_fwhm: float | None = DEFAULT_RHO_FWHM, bins: int = 100,
                 ols_residuals: np.ndarray | None = None) -> np.ndarray:
    """The AR(1) coefficient each voxel is whitened with under ``noise_model``, after binning.

    The same numbers :func:`fit_noise_model` returns as ``rho`` (and fits one ``ARModel`` per value of):
    zeros for ``"ols"``, nilearn's truncated Yule-Walker estimate for ``"ar1"``, the bias-corrected
    (smoothed or pooled) estimate rounded to ``1 / bins`` for ``"ar1_bc"`` / ``"ar1_pooled"``.
    """
    check_noise_model(noise_model)
    X = np.asarray(X, dtype=np.float64)
    if noise_model == "ols":
        return np.zeros(Y.shape[1])
    resid = _ols_residuals(Y, X) if ols_residuals is None else ols_residuals
    if noise_model == "ar1":
        ar_coef = _yule_walker_ar1(resid.T)[:, 0]
        return (ar_coef * bins).astype(int) * 1.0 / bins  # nilearn's truncation loop (run_glm), vectorised
    q = _lag1_autocorr(resid)
    if noise_model == "ar1_pooled":
        q = np.full_like(q, q.mean())
    elif rho_fwhm:
        if mask_img is None:
            raise ValueError("ar1_bc with rho_fwhm > 0 needs the mask image to smooth the autocorrelation")
        q = _smooth_in_mask(q, mask_img, float(rho_fwhm))
    return np.round(bias_corrected_ar1(q, X) * bins) / bins + 0.0


_VOXEL_MAJOR: list = [None, None]  # weak reference to the last read-only data matrix, and its transpose


def _voxel_major(Y: np.ndarray) -> np.ndarray:
    """``Y.T`` as a C-contiguous (n_voxels, n_scans) array, kept for the last read-only ``Y`` (reused by the
    null designs, which all fit the same data); rows of it are gathered much faster than columns of ``Y``."""
    import weakref

    ref, cached = _VOXEL_MAJOR
    if ref is not None and ref() is Y:
        return cached
    out = np.ascontiguousarray(np.asarray(Y, dtype=np.float64).T)
    if isinstance(Y, np.ndarray) and not Y.flags.writeable:
        _VOXEL_MAJOR[:] = [weakref.ref(Y), out]
        weakref.finalize(Y, _forget_voxel_major, id(out))  # the copy goes when the data matrix goes
    return out


def _forget_voxel_major(out_id: int) -> None:
    if _VOXEL_MAJOR[1] is not None and id(_VOXEL_MAJOR[1]) == out_id:
        _VOXEL_MAJOR[:] = [None, None]


@_blas_limited
def t_contrast_z(Y: np.ndarray, X: np.ndarray, rho: np.ndarray, contrast_vector) -> np.ndarray:
    """z of a t contrast with every voxel whitened by its own AR(1) coefficient ``rho``.

    The z values of one nilearn :class:`~nilearn.glm.regression.ARModel` fit per distinct ``rho``
    followed by :func:`nilearn.glm.contrasts.compute_contrast` (same whitening, pseudo-inverse,
    dispersion ``RSS / (n - p)``, variance ``c' pinv(Xw) pinv(Xw)' c x dispersion``, degrees of freedom
    ``n - rank(X)`` and nilearn's t-to-z conversion), equal to them to rounding error, but without
    building a results object per bin: the null designs of the calibration need only this one map.

    Parameters
    ----------
    Y : array of shape (n_scans, n_voxels)
    X : array of shape (n_scans, n_regressors)
    rho : array of shape (n_voxels,)
        AR(1) coefficient per voxel (e.g. from :func:`estimate_rho`); a few distinct values.
    contrast_vector : array of shape (n_regressors,)

    Returns
    -------
    array of shape (n_voxels,)
    """
    from nilearn.glm.contrasts import Contrast
    from scipy import linalg

    X = np.asarray(X, dtype=np.float64)
    c = np.asarray(contrast_vector, dtype=np.float64).ravel()
    n, p = X.shape
    values, codes = np.unique(np.asarray(rho, dtype=np.float64), return_inverse=True)
    codes = codes.ravel()
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(values) + 1))
    # voxels as rows, sorted by coefficient: each bin is a contiguous block of rows, all whitened in one pass
    # (scan t minus rho times scan t-1, as ARModel.whiten does)
    W = _voxel_major(Y)[order]
    W[:, 1:] -= values[codes[order]][:, None] * W[:, :-1]
    effect_sorted = np.empty(len(order))
    var_sorted = np.empty(len(order))
    eps = np.abs(X).sum() * np.finfo(np.float64).eps
    dof = n - np.linalg.matrix_rank(X, eps)
    for g, r in enumerate(values):
        block = slice(bounds[g], bounds[g + 1])
        Xw = X.copy()
        Xw[1:] -= r * X[:-1]
        pinv = linalg.pinv(Xw)
        yw = W[block]
        resid = yw - (yw @ pinv.T) @ Xw.T
        a = c @ pinv
        effect_sorted[block] = yw @ a
        var_sorted[block] = (a @ a) * np.einsum("vt,vt->v", resid, resid) / (n - p)
    effect = np.empty_like(effect_sorted)
    var = np.empty_like(var_sorted)
    effect[order] = effect_sorted
    var[order] = var_sorted
    return np.asarray(Contrast(effect=effect, variance=var, dof=dof, stat_type="t").z_score(), dtype=float).ravel()


@_blas_limited
def fit_noise_model(Y: np.ndarray, X: np.ndarray, noise_model: str, *, mask_img=None,
                    rho_fwhm: float | None = DEFAULT_RHO_FWHM, bins: int = 100, n_jobs: int = 1,
                    ols_residuals: np.ndarray | None = None):
    """Fit a (masked, scaled) data matrix with one of :data:`NOISE_MODELS`.

    Parameters
    ----------
    Y : array of shape (n_scans, n_voxels)
    X : array of shape (n_scans, n_regressors)
    noise_model : str
        A key of :data:`NOISE_MODELS`. ``"ols"`` and ``"ar1"`` call nilearn's ``run_glm``.
    mask_img : Nifti1Image, optional
        Mask that maps the columns of ``Y`` to voxels; needed to smooth the autocorrelation
        (``"ar1_bc"`` with ``rho_fwhm > 0``).
    rho_fwhm : float or None
        FWHM (mm) of the spatial smoothing of the lag-1 autocorrelation for ``"ar1_bc"``;
        0 or None estimates it voxel by voxel.
    bins : int
        AR coefficients are rounded to multiples of ``1 / bins``.
    n_jobs : int
    ols_residuals : array, optional
        Residuals of an OLS fit of ``Y`` on ``X`` when already available.

    Returns
    -------
    labels : array of shape (n_voxels,)
    results : dict
        Label -> :class:`~nilearn.glm.regression.RegressionResults`, as ``run_glm`` returns.
    rho : array of shape (n_voxels,)
        AR(1) coefficient used for each voxel, after binning (zeros for ``"ols"``).
    """
    check_noise_model(noise_model)
    X = np.asarray(X, dtype=np.float64)
    if noise_model == "ar1":
        labels, results = run_glm_ar1(Y, X, bins=bins, n_jobs=n_jobs)
        return labels, results, np.asarray(labels, dtype=float)
    if noise_model not in _CALIBRATED:
        from nilearn.glm.first_level import run_glm

        labels, results = run_glm(Y, X, noise_model=noise_model, bins=bins, n_jobs=n_jobs)
        return labels, results, np.zeros(Y.shape[1])
    rho = estimate_rho(Y, X, noise_model, mask_img=mask_img, rho_fwhm=rho_fwhm, bins=bins,
                       ols_residuals=ols_residuals)
    labels, results, rho = _fit_ar1_bins(Y, X, rho, bins, n_jobs)
    return labels, results, rho


# --------------------------------------------------------------------------------------------
# FirstLevelModel integration
# --------------------------------------------------------------------------------------------

def _define_calibrated_model():
    from nilearn.glm.first_level import FirstLevelModel
    from nilearn.glm.regression import SimpleRegressionResults

    class CalibratedFirstLevelModel(FirstLevelModel):
        """nilearn's ``FirstLevelModel`` that also accepts ``noise_model="ar1_bc"`` or ``"ar1_pooled"``.

        The constructor is nilearn's. For the calibrated models :meth:`fit` first runs nilearn's own
        OLS fit (masking, scaling, design handling all unchanged), then refits every run with the
        calibrated AR(1) model and stores ``labels_`` / ``results_`` in ``run_glm``'s layout, so
        ``compute_contrast`` (every ``output_type``) and the other nilearn methods work as usual.
        ``"ar1"`` takes the same route (nilearn's OLS fit, then :func:`run_glm_ar1`, which gives
        nilearn's ``run_glm`` results bit for bit, faster). Other noise models go straight to nilearn.

        Attributes
        ----------
        rho_ : list of arrays
            AR(1) coefficient used for each voxel, one array per run (in addition to nilearn's attributes).
        rho_fwhm_ : float or None
            Smoothing (mm) of the autocorrelation that was used.
        """

        @_blas_limited
        def fit(self, run_imgs, events=None, confounds=None, sample_masks=None, design_matrices=None,
                bins=100, rho_fwhm=DEFAULT_RHO_FWHM):
            """Fit the GLM; see :meth:`nilearn.glm.first_level.FirstLevelModel.fit`.

            ``rho_fwhm`` (mm) smooths the autocorrelation of ``"ar1_bc"`` (0 or None: voxel-wise).
            """
            check_noise_model(self.noise_model)
            self.rho_fwhm_ = rho_fwhm if self.noise_model == "ar1_bc" else None
            if self.noise_model not in (*_CALIBRATED, "ar1"):
                super().fit(run_imgs, events=events, confounds=confounds, sample_masks=sample_masks,
                            design_matrices=design_matrices, bins=bins)
                self.rho_ = [np.asarray(lab, dtype=float) if self.noise_model == "ar1"
                             else np.zeros(len(lab)) for lab in self.labels_]
                return self
            requested, minimize = self.noise_model, self.minimize_memory
            self.noise_model, self.minimize_memory = "ols", False
            try:
                super().fit(run_imgs, events=events, confounds=confounds, sample_masks=sample_masks,
                            design_matrices=design_matrices, bins=bins)
            finally:
                self.noise_model, self.minimize_memory = requested, minimize
            if getattr(self, "_reporting_data", None) is not None:
                self._reporting_data["noise_model"] = requested
            labels_, results_, self.rho_ = [], [], []
            for run, (design, results) in enumerate(zip(self.design_matrices_, self.results_, strict=True)):
                ols = results[0.0]
                if requested == "ar1":  # nilearn's run_glm, from the OLS fit nilearn just made
                    labels, ar_results = run_glm_ar1(ols.Y, design.values, bins=bins, n_jobs=self.n_jobs,
                                                     ols_result=ols)
                    rho = np.asarray(labels, dtype=float)
                else:
                    labels, ar_results, rho = fit_noise_model(
                        ols.Y, design.to_numpy(dtype=float), requested, mask_img=self.masker_.mask_img_,
                        rho_fwhm=rho_fwhm, bins=bins, n_jobs=self.n_jobs, ols_residuals=ols.residuals)
                self.results_[run] = None  # free the OLS fit before keeping the AR one
                if minimize:
                    ar_results = {k: SimpleRegressionResults(v) for k, v in ar_results.items()}
                labels_.append(labels)
                results_.append(ar_results)
                self.rho_.append(rho)
            self.labels_, self.results_ = labels_, results_
            return self

    CalibratedFirstLevelModel.__module__ = __name__
    CalibratedFirstLevelModel.__qualname__ = "CalibratedFirstLevelModel"
    return CalibratedFirstLevelModel


def __getattr__(name):  # CalibratedFirstLevelModel is defined on first use (it needs nilearn.glm)
    if name == "CalibratedFirstLevelModel":
        cls = globals()[name] = _define_calibrated_model()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def fit_first_level(bold_img, design_matrix: pd.DataFrame, mask_img, *, t_r: float,
                    noise_model: str = DEFAULT_NOISE_MODEL, smoothing_fwhm=None, n_jobs: int = 1,
                    rho_fwhm: float | None = DEFAULT_RHO_FWHM, bins: int = 100,
                    **kwargs) -> FirstLevelModel:
    """Fit a first-level GLM with one of :data:`NOISE_MODELS` on a given design matrix.

    Parameters
    ----------
    bold_img : Nifti1Image
        One 4D run.
    design_matrix : DataFrame
        One row per scan (``design_matrices=[design_matrix]`` in nilearn).
    mask_img : Nifti1Image or None
        Brain mask; ``None`` lets nilearn compute one.
    t_r : float
    noise_model : str
        ``"ar1_bc"`` (default, calibrated), ``"ar1_pooled"``, ``"ar1"`` (nilearn's, reference) or ``"ols"``.
    smoothing_fwhm : float or None
        Spatial smoothing of the data (mm), passed to nilearn.
    n_jobs : int
    rho_fwhm : float or None
        Spatial smoothing (mm) of the autocorrelation for ``"ar1_bc"``.
    bins : int
        AR coefficients are rounded to multiples of ``1 / bins``.
    **kwargs
        Any other :class:`~nilearn.glm.first_level.FirstLevelModel` parameter
        (``signal_scaling``, ``minimize_memory``, ...).

    Returns
    -------
    CalibratedFirstLevelModel
        A fitted ``FirstLevelModel``; ``compute_contrast`` works as in nilearn.

    Raises
    ------
    ValueError
        If ``noise_model`` is not one of :data:`NOISE_MODELS`.
    """
    check_noise_model(noise_model)
    model = __getattr__("CalibratedFirstLevelModel")(t_r=t_r, noise_model=noise_model, smoothing_fwhm=smoothing_fwhm,
                                      n_jobs=n_jobs, mask_img=mask_img, **kwargs)
    with warnings.catch_warnings():
        # nilearn's notes that t_r is unused with a given design and that the given mask is used: both expected
        warnings.filterwarnings("ignore", message=r"If design matrices are supplied")
        warnings.filterwarnings("ignore", message=r".*Generation of a mask has been requested")
        return model.fit(bold_img, design_matrices=[design_matrix], bins=bins, rho_fwhm=rho_fwhm)


def model_data(model: FirstLevelModel, run: int = 0) -> np.ndarray:
    """The masked, scaled data matrix (n_scans, n_voxels) a model was fitted on.

    Needs a model fitted with ``minimize_memory=False``. The matrix is rebuilt once per fit and kept on the
    model (the calibration asks for it several times); treat it as read-only.
    """
    if isinstance(model, MatrixGLM):
        return model.data.Y.T
    cache = model.__dict__.setdefault("_analysis_model_data", {})
    key = (run, id(model.results_[run]))
    if key not in cache:
        cache.clear()
        cache[key] = _model_data(model, run)
        cache[key].flags.writeable = False
    return cache[key]


def model_residuals(model: FirstLevelModel, run: int = 0) -> np.ndarray:
    """The whitened residuals (n_scans, n_voxels) of a fitted model, in the masker's voxel order.

    ``whitened_residuals`` of each AR bin's nilearn ``RegressionResults`` (the residuals of the whitened model,
    as SPM estimates smoothness from): needs a model fitted with ``minimize_memory=False``.
    """
    if isinstance(model, MatrixGLM):  # computed block by block from the one data matrix
        return model.whitened_residuals()
    labels, results = np.asarray(model.labels_[run]), model.results_[run]
    first = next(iter(results.values()))
    if not hasattr(first, "whitened_residuals"):
        raise ValueError("model_residuals needs a model fitted with minimize_memory=False")
    out = np.empty((first.whitened_residuals.shape[0], len(labels)), dtype=np.float64)
    unique, codes = np.unique(labels, return_inverse=True)
    groups = dict(zip(unique.tolist(), _groups(codes.ravel(), len(unique)), strict=True))
    for label, res in results.items():
        out[:, groups[label if labels.dtype.kind != "U" else str(label)]] = res.whitened_residuals
    return out


def model_residual_rows(model, run: int = 0):
    """The whitened residuals of a fitted model as :func:`analysis.rft.estimate_smoothness` reads them: for a
    :class:`MatrixGLM`, a function ``rows(start, stop)`` computing voxels ``start:stop`` from the data matrix
    when asked (no residual matrix is held); for nilearn's ``FirstLevelModel``, :func:`model_residuals`."""
    if isinstance(model, MatrixGLM):
        return model.whitened_residual_rows()
    return model_residuals(model, run)


def _model_data(model: FirstLevelModel, run: int) -> np.ndarray:
    labels, results = model.labels_[run], model.results_[run]
    first = next(iter(results.values()))
    if not hasattr(first, "Y"):
        raise ValueError("model_data needs a model fitted with minimize_memory=False")
    Y = np.empty((first.Y.shape[0], len(labels)), dtype=np.float64)
    keys = list(results)
    unique, codes = np.unique(np.asarray(labels), return_inverse=True)
    if len(unique) == len(keys) and all(np.asarray(labels).dtype.kind == "U" for _ in (0,)):
        groups = dict(zip(unique.tolist(), _groups(codes.ravel(), len(unique)), strict=True))
        for label, res in results.items():
            Y[:, groups[str(label)]] = res.Y
        return Y
    for label, res in results.items():  # numeric labels (nilearn's OLS: 0.0)
        Y[:, labels == label] = res.Y
    return Y


# --------------------------------------------------------------------------------------------
# one data matrix, many fits: projections instead of whitened copies
# --------------------------------------------------------------------------------------------

_CHUNK_VOXELS = 16384  # voxels per block when the matrix is read (a block of float64 is n_scans x 128 kB)


class ProjectedData:
    """The masked, scaled data of a run, voxel by time, and what every AR(1) fit of it needs.

    Every quantity of an OLS or AR(1) fit of a voxel's series ``y`` (length ``n``) on a design ``X`` is a function
    of a few numbers per voxel: ``s0 = y'y``, ``s1 = sum y_t y_(t+1)``, the last sample, and for each design column
    ``x`` the three projections ``x'y``, ``sum x_(t+1) y_t`` and ``sum x_t y_(t+1)``. With rho the AR(1)
    coefficient, the whitened series ``yw = y_t - rho y_(t-1)`` (``yw_0 = y_0``, as nilearn's ``ARModel.whiten``)
    has ``Xw'yw = (1 + rho^2) X'y - rho (U + D) - rho^2 x_(n-1) y_(n-1)`` and ``yw'yw = s0 - 2 rho s1 + rho^2 (s0 -
    y_(n-1)^2)``; the coefficients, residual sum of squares and contrast then follow from the small ``p x p``
    matrix ``pinv(Xw) pinv(Xw)'`` of each coefficient bin. The projections of a column are computed once, in one
    pass over the matrix in blocks of voxels, and reused by every design that holds the column (the main design,
    the null designs of the calibration, the reference model, the seed design), so a further design costs
    ``O(p^2)`` per voxel instead of a pass over the data and no copy of it.

    Parameters
    ----------
    Y : array of shape (n_voxels, n_scans)
        The scaled data, voxel-major (float32 is enough: every product is accumulated in float64).
    mask_img : Nifti1Image
        Maps the rows of ``Y`` to voxels (C order of the mask's nonzero voxels, as nilearn's maskers).
    """

    def __init__(self, Y: np.ndarray, mask_img, chunk: int = _CHUNK_VOXELS):
        self.Y = Y
        self.mask_img = mask_img
        self.n_voxels, self.n_scans = Y.shape
        self.chunk = int(chunk)
        self._proj: dict[bytes, np.ndarray] = {}  # column bytes -> (3, n_voxels): x'y, Up(x)'y, Down(x)'y
        s0, s1, total = (np.empty(self.n_voxels) for _ in range(3))
        for sl, y in self._blocks():
            s0[sl] = np.einsum("vt,vt->v", y, y)
            s1[sl] = np.einsum("vt,vt->v", y[:, 1:], y[:, :-1])
            total[sl] = y.sum(axis=1)
        self.s0, self.s1, self.total = s0, s1, total
        self.first = np.asarray(Y[:, 0], dtype=np.float64)
        self.last = np.asarray(Y[:, -1], dtype=np.float64)

    def _blocks(self):
        for start in range(0, self.n_voxels, self.chunk):
            sl = slice(start, min(start + self.chunk, self.n_voxels))
            yield sl, np.asarray(self.Y[sl], dtype=np.float64)

    @_blas_limited
    def add_columns(self, X: np.ndarray) -> list[bytes]:
        """Compute and keep the projections of the columns of ``X`` not seen yet (one pass over the matrix for
        all of them); return the columns' keys. Nothing else is built: for a caller that only prepares them."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        keys = [np.ascontiguousarray(X[:, j]).tobytes() for j in range(X.shape[1])]
        new = list(dict.fromkeys(k for k in keys if k not in self._proj))
        if new:
            C = np.column_stack([np.frombuffer(k, dtype=np.float64) for k in new])
            up = np.zeros_like(C)
            up[:-1] = C[1:]
            down = np.zeros_like(C)
            down[1:] = C[:-1]
            M = np.hstack([C, up, down])  # (n, 3k): one product per block of voxels
            k = len(new)
            out = np.empty((k, 3, self.n_voxels))  # column j's three projections are out[j]: kept as views
            for sl, y in self._blocks():
                out[:, :, sl] = (y @ M).T.reshape(3, k, -1).transpose(1, 0, 2)
            for j, key in enumerate(new):
                self._proj[key] = out[j]
        return keys

    def projections(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``X'y``, ``Up(X)'y`` and ``Down(X)'y`` for every voxel, each of shape (p, n_voxels)."""
        keys = self.add_columns(X)
        stacked = np.stack([self._proj[k] for k in keys], axis=1)  # (3, p, V)
        return stacked[0], stacked[1], stacked[2]

    def _ols(self, X: np.ndarray):
        from scipy import linalg

        a, u, d = self.projections(X)
        pinv = linalg.pinv(X)
        beta = (pinv @ pinv.T) @ a  # pinv(X) y = pinv(X) pinv(X)' X'y
        rss = self.s0 - np.einsum("pv,pv->v", a, beta)
        K = X[:-1].T @ X[1:]
        lag = self.s1 - np.einsum("pv,pv->v", beta, u + d - K @ beta)
        return beta, rss, lag

    def estimate_rho(self, X: np.ndarray, noise_model: str, *, rho_fwhm: float | None = DEFAULT_RHO_FWHM,
                     bins: int = 100) -> np.ndarray:
        """:func:`estimate_rho` of the matrix on ``X``, from the projections (no residual matrix)."""
        check_noise_model(noise_model)
        X = np.asarray(X, dtype=np.float64)
        n = self.n_scans
        if noise_model == "ols":
            return np.zeros(self.n_voxels)
        beta, rss, lag = self._ols(X)
        if noise_model == "ar1":  # nilearn's Yule-Walker on the residuals minus their grand mean, then truncation
            tot = self.total - X.sum(axis=0) @ beta
            r_first = self.first - X[0] @ beta
            r_last = self.last - X[-1] @ beta
            m = tot.sum() / (self.n_voxels * n)
            r0 = (rss - 2 * m * tot + n * m * m) / (n * n)
            r1 = (lag - m * (2 * tot - r_first - r_last) + (n - 1) * m * m) / ((n - 1) * n)
            with np.errstate(divide="ignore", invalid="ignore"):
                ar_coef = r1 / r0
            return (ar_coef * bins).astype(int) * 1.0 / bins
        q = np.divide(lag, rss, out=np.zeros_like(lag), where=rss > 0)
        if noise_model == "ar1_pooled":
            q = np.full_like(q, q.mean())
        elif rho_fwhm:
            q = _smooth_in_mask(q, self.mask_img, float(rho_fwhm))
        return np.round(bias_corrected_ar1(q, X) * bins) / bins + 0.0

    @_blas_limited
    def fit(self, X: np.ndarray, rho: np.ndarray):
        """AR(1) fit of every voxel with its own coefficient: ``beta`` (p, V), dispersion (V,), and per voxel
        the index of its coefficient bin with the bins' ``pinv(Xw) pinv(Xw)'`` matrices."""
        from scipy import linalg

        X = np.asarray(X, dtype=np.float64)
        n, p = X.shape
        a, u, d = self.projections(X)
        values, codes = np.unique(np.asarray(rho, dtype=np.float64), return_inverse=True)
        codes = codes.ravel()
        r = values[codes]
        g = a * (1 + r * r) - (u + d) * r - np.outer(X[-1], self.last * r * r)  # Xw'yw
        yy = self.s0 - 2 * r * self.s1 + r * r * (self.s0 - self.last ** 2)  # yw'yw
        beta = np.empty_like(g)
        covs = np.empty((len(values), p, p))
        for k, (idx, value) in enumerate(zip(_groups(codes, len(values)), values, strict=True)):
            Xw = X.copy()
            Xw[1:] -= value * X[:-1]
            pinv = linalg.pinv(Xw)
            covs[k] = pinv @ pinv.T
            beta[:, idx] = covs[k] @ g[:, idx]
        rss = yy - np.einsum("pv,pv->v", g, beta)
        return beta, rss / (n - p), codes, covs

    def t_contrast(self, X: np.ndarray, rho: np.ndarray, contrast_vector):
        """nilearn's ``Contrast`` of a t contrast for every voxel (as :func:`t_contrast_z`, from the projections)."""
        from nilearn.glm.contrasts import Contrast

        X = np.asarray(X, dtype=np.float64)
        c = np.asarray(contrast_vector, dtype=np.float64).ravel()
        beta, dispersion, codes, covs = self.fit(X, rho)
        effect = c @ beta
        var = np.einsum("p,kpq,q->k", c, covs, c)[codes] * dispersion
        eps = np.abs(X).sum() * np.finfo(np.float64).eps
        dof = X.shape[0] - np.linalg.matrix_rank(X, eps)
        return Contrast(effect=effect[None], variance=var, dof=dof, stat_type="t")

    def t_contrast_z(self, X: np.ndarray, rho: np.ndarray, contrast_vector) -> np.ndarray:
        return np.asarray(self.t_contrast(X, rho, contrast_vector).z_score(), dtype=float).ravel()

    def whitened_residual_rows(self, X: np.ndarray, rho: np.ndarray):
        """A function ``rows(start, stop)``: the residuals of the whitened model for voxels ``start:stop``,
        voxel-major ``(stop - start, n_scans)`` float64, computed from the matrix when asked (one fit here; no
        residual matrix is held)."""
        X = np.asarray(X, dtype=np.float64)
        beta = self.fit(X, rho)[0]
        rho = np.asarray(rho, dtype=np.float64)

        @_blas_limited
        def rows(start: int, stop: int) -> np.ndarray:
            y = np.array(self.Y[start:stop], dtype=np.float64)  # a new array: the data matrix is not written
            y -= (X @ beta[:, start:stop]).T  # OLS-style residual of the AR fit, then whitened (whitening is linear)
            y[:, 1:] -= rho[start:stop, None] * (y[:, :-1] + 0.0)
            return y

        return rows

    def whitened_residuals(self, X: np.ndarray, rho: np.ndarray, dtype=np.float64) -> np.ndarray:
        """Residuals of the whitened model, (n_scans, n_voxels) (a transposed view of a voxel-major array),
        computed block by block from the matrix."""
        rows = self.whitened_residual_rows(X, rho)
        out = np.empty((self.n_voxels, self.n_scans), dtype=dtype)  # voxel-major: rows are written in place
        for start in range(0, self.n_voxels, self.chunk):
            stop = min(start + self.chunk, self.n_voxels)
            out[start:stop] = rows(start, stop)
        return out.T


class MatrixGLM:
    """A first-level AR(1) GLM fitted on one voxel-by-time matrix (:class:`ProjectedData`).

    What the report needs from nilearn's ``FirstLevelModel``, computed from the matrix: ``compute_contrast``
    with nilearn's outputs (``z_score``, ``stat``, ``p_value``, ``effect_size``, ``effect_variance``; the same
    numbers as ``FirstLevelModel`` with the project's noise models, to rounding error), ``design_matrices_``,
    ``noise_model``, ``rho_`` / ``rho_fwhm_``, ``mask_img``, :meth:`unmask`, and :meth:`whitened_residuals`
    (for the random-field smoothness). The null designs, the reference model and the seed design are fitted on
    the same :attr:`data` (:meth:`z_map`), reusing its projections.
    """

    def __init__(self, data: ProjectedData, design: pd.DataFrame, noise_model: str = DEFAULT_NOISE_MODEL, *,
                 rho_fwhm: float | None = DEFAULT_RHO_FWHM, bins: int = 100):
        check_noise_model(noise_model)
        self.data = data
        self.noise_model = noise_model
        self.rho_fwhm_ = rho_fwhm if noise_model == "ar1_bc" else None
        self.bins = bins
        self.design_matrices_ = [design]
        self.mask_img = data.mask_img
        self._X = design.to_numpy(dtype=float)
        self.rho_ = [data.estimate_rho(self._X, noise_model, rho_fwhm=rho_fwhm, bins=bins)]
        self._mask = np.asarray(data.mask_img.dataobj) != 0

    @property
    def labels_(self):
        return [np.asarray(self.rho_[0], dtype=float)]

    def unmask(self, values) -> "nib.Nifti1Image":
        """A 3D image (float64) of per-voxel values, 0 outside the mask."""
        import nibabel as nib

        out = np.zeros(self._mask.shape)
        out[self._mask] = np.asarray(values, dtype=float).ravel()
        return nib.Nifti1Image(out, self.mask_img.affine)

    def compute_contrast(self, contrast_def, stat_type: str = "t", output_type: str = "z_score"):
        """Maps of a t contrast given as a vector of weights (numbers only, never an expression)."""
        if stat_type != "t":
            raise ValueError("MatrixGLM computes t contrasts only")
        con = self.data.t_contrast(self._X, self.rho_[0], np.asarray(contrast_def, dtype=float))
        kinds = ("z_score", "stat", "p_value", "effect_size", "effect_variance")
        wanted = kinds if output_type == "all" else (output_type,)
        maps = {}
        for kind in wanted:
            img = self.unmask(getattr(con, kind)())
            img.header["descrip"] = f"{kind} of contrast {list(np.asarray(contrast_def, dtype=float))}"[:79]
            maps[kind] = img
        return maps if output_type == "all" else maps[output_type]

    def z_map(self, design, contrast_vector, noise_model: str | None = None,
              rho_fwhm: float | None = None) -> np.ndarray:
        """z values of a t contrast of another design (same rows) fitted on the same data under ``noise_model``
        (default: this model's), with its own AR(1) estimate."""
        X = np.asarray(design, dtype=float)
        if rho_fwhm is None:
            rho_fwhm = DEFAULT_RHO_FWHM if self.rho_fwhm_ is None else self.rho_fwhm_
        rho = self.data.estimate_rho(X, noise_model or self.noise_model, rho_fwhm=rho_fwhm, bins=self.bins)
        return self.data.t_contrast_z(X, rho, contrast_vector)

    def whitened_residuals(self, dtype=np.float64) -> np.ndarray:
        """Residuals of the whitened model (n_scans, n_voxels), the mask's voxels in C order."""
        return self.data.whitened_residuals(self._X, self.rho_[0], dtype=dtype)

    def whitened_residual_rows(self):
        """A function ``rows(start, stop)``: the whitened residuals of voxels ``start:stop``, voxel-major
        (:meth:`ProjectedData.whitened_residual_rows`)."""
        return self.data.whitened_residual_rows(self._X, self.rho_[0])


def fit_matrix(Y: np.ndarray, design: pd.DataFrame, mask_img, noise_model: str = DEFAULT_NOISE_MODEL, *,
               rho_fwhm: float | None = DEFAULT_RHO_FWHM, bins: int = 100) -> MatrixGLM:
    """Fit the GLM on a scaled voxel-by-time matrix (see :class:`MatrixGLM`)."""
    return MatrixGLM(ProjectedData(Y, mask_img), design, noise_model, rho_fwhm=rho_fwhm, bins=bins)
