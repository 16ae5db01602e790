"""Is the z map calibrated? Empirical null and null designs for one contrast.

Three checks, all on the voxels of the mask:

* **z distribution** of the contrast: mean, SD, share of voxels beyond |z| > 1.96,
  2.58 and 3.29 (nominal two-sided p = .05, .01, .001), histogram and QQ quantiles
  against N(0, 1).
* **Empirical null** (Efron, 2004): a normal fitted to the central part of the z
  histogram, where true effects are rare. The fit is the maximum-likelihood fit of a
  normal truncated to ``median(z) +- null_window`` (default 1.5), the "MLE" variant of
  Efron's locfdr; a MAD-based SD (1.4826 x median absolute deviation) is kept as a
  cross-check.
* **Null designs**: the same data fitted again with ``n_null`` designs whose task blocks
  are put in another order (:func:`permuted_block_designs`): the run is cut into segments
  one block long, the segments are permuted, and the task regressors are rebuilt from the
  moved events (or, without events, from the moved rows of the design). Orders are kept
  only if the null regressor is nearly uncorrelated with the real one *and* with every other
  null regressor (after the nuisance regressors are projected out), so the designs are
  really different tests. (Circular shifts of a periodic block design are not: every shift
  by a quarter period gives the same regressor up to sign.) Whatever they "detect" is false.

The z map is called *trustworthy* when the empirical null of the observed z and the
empirical null of the null-design z both have SD within ``1 +- tolerance`` and mean
within ``0 +- tolerance`` (the centre), and the share of null-design voxels beyond the
highest threshold is compatible with its nominal rate: its 95 % binomial interval reaches
within a factor :data:`TAIL_RATIO` of it (the tail).

Examples
--------
>>> cal = calibrate(bold_img, design, mask_img, contrast="listening", t_r=7.0)  # doctest: +SKIP
>>> cal.trustworthy, round(cal.null_sd, 2)  # doctest: +SKIP
(True, 1.01)
"""

from __future__ import annotations

from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported where used, so that the report can read a Calibration cheaply
    import pandas as pd

from .noise import DEFAULT_NOISE_MODEL, DEFAULT_RHO_FWHM, NOISE_MODELS, NoiseModel, _blas_limited, \
    check_noise_model, estimate_rho, fit_first_level, model_data, t_contrast_z
from .serial import JSON_CONFIG

__all__ = ["THRESHOLDS", "TAIL_RATIO", "Calibration", "calibrate", "calibration_from_z", "empirical_null",
           "choose_null_shifts", "permuted_block_designs", "NullDesigns", "z_values"]

THRESHOLDS = (1.96, 2.58, 3.29)
TAIL_RATIO = 1.5  # the tail is calibrated when its 95 % interval reaches within this factor of the nominal share
_QQ_GRID = np.linspace(-5.0, 5.0, 201)  # noqa: E305
_HIST_EDGES = np.linspace(-6.0, 6.0, 121)


@dataclass(frozen=True)
class Calibration:
    """Calibration of the z map of one contrast under one noise model (immutable, JSON-ready).

    Attributes
    ----------
    noise_model, contrast : str
    n_voxels : int
        Voxels with a finite z value in the mask.
    z_mean, z_sd : float
        Plain mean and SD of the observed z map.
    null_mean, null_sd : float
        Empirical null of the observed z: normal fitted to the centre of the histogram.
    mad_sd : float
        1.4826 x median absolute deviation of the observed z (cross-check of ``null_sd``).
    null_window : float
        Half-width of the central region used for the empirical null.
    thresholds, nominal_share : tuple of float
        |z| cut-offs and their two-sided nominal tail probability.
    observed_share : tuple of float
        Share of voxels with |z| beyond each threshold.
    null_corr : tuple of float
        Correlation of each null design's contrast regressor with the real one (nuisance projected out).
    null_pair_corr : tuple of tuple of float
        Correlation matrix of the null designs' contrast regressors with each other (1 on the diagonal).
    null_method : str
        How the null designs were built (``"permuted blocks of events"`` or ``"permuted blocks of design rows"``).
    null_block_scans : int
        Length of the permuted segments, in scans.
    null_orders : tuple of tuple of int
        Segment order of each null design (the real design is ``0, 1, 2, ...``).
    null_design_share : tuple of tuple of float
        For each null design, the share beyond each threshold.
    null_design_pooled_share : tuple of float
        Share beyond each threshold over all null designs together.
    null_design_mean, null_design_sd : float
        Plain mean and SD of the pooled null-design z.
    null_design_null_mean, null_design_null_sd : float
        Empirical null (central fit) of the pooled null-design z.
    null_design_sds : tuple of float
        Plain SD of each null design's z.
    qq_theoretical, qq_observed, qq_null : tuple of float
        Standard-normal quantiles and the matching quantiles of the observed and pooled null-design z.
    hist_edges, hist_observed, hist_null : tuple of float
        Histogram bin edges and densities (count / (n x bin width)) of the observed and null-design z.
    tolerance : float
        Allowed deviation of the empirical-null SD from 1 (and of its mean from 0).
    tail_count, tail_n : int
        Null-design voxels beyond the highest threshold, out of all null-design voxels.
    tail_ci : tuple of float
        95 % Clopper-Pearson interval of ``tail_count / tail_n`` (treats voxels as independent, so it is
        narrower than the true uncertainty of a spatially smooth map).
    tail_ratio : float
        :data:`TAIL_RATIO`, stored with the verdict it produced.
    trustworthy : bool
        Both empirical nulls within tolerance and the null-design tail compatible with its nominal rate.
    t_r : float
        Repetition time, to express the shifts in seconds.
    """

    __pydantic_config__ = JSON_CONFIG  # NaN and inf survive JSON (analysis.serial)

    noise_model: str
    contrast: str
    n_voxels: int
    z_mean: float
    z_sd: float
    null_mean: float
    null_sd: float
    mad_sd: float
    null_window: float
    thresholds: tuple[float, ...]
    nominal_share: tuple[float, ...]
    observed_share: tuple[float, ...]
    null_corr: tuple[float, ...]
    null_pair_corr: tuple[tuple[float, ...], ...]
    null_design_share: tuple[tuple[float, ...], ...]
    null_design_pooled_share: tuple[float, ...]
    null_design_mean: float
    null_design_sd: float
    null_design_null_mean: float
    null_design_null_sd: float
    null_design_sds: tuple[float, ...]
    qq_theoretical: tuple[float, ...]
    qq_observed: tuple[float, ...]
    qq_null: tuple[float, ...]
    hist_edges: tuple[float, ...]
    hist_observed: tuple[float, ...]
    hist_null: tuple[float, ...]
    tolerance: float
    trustworthy: bool
    t_r: float
    null_method: str = ""
    null_block_scans: int = 0
    null_orders: tuple[tuple[int, ...], ...] = ()
    tail_count: int = 0
    tail_n: int = 0
    tail_ci: tuple[float, ...] = ()
    tail_ratio: float = TAIL_RATIO

    # ---- read-only views for the templates (no new numbers, only lookups and ratios) ----
    @property
    def model(self) -> NoiseModel:
        """Name, description and citation keys of the noise model."""
        return NOISE_MODELS[self.noise_model]

    @property
    def n_null(self) -> int:
        return len(self.null_design_sds)

    @property
    def null_block_seconds(self) -> float:
        return self.null_block_scans * self.t_r

    @property
    def max_abs_null_corr(self) -> float:
        """Largest |correlation| of a null regressor with the real one."""
        return max((abs(r) for r in self.null_corr), default=float("nan"))

    @property
    def max_abs_pair_corr(self) -> float:
        """Largest |correlation| between two null regressors."""
        n = len(self.null_pair_corr)
        return max((abs(self.null_pair_corr[i][j]) for i in range(n) for j in range(i + 1, n)), default=float("nan"))

    @property
    def tail_share(self) -> float:
        return self.tail_count / self.tail_n if self.tail_n else float("nan")

    @property
    def tail_nominal(self) -> float:
        return self.nominal_share[-1]

    @property
    def tail_ok(self) -> bool:
        """The null designs' tail beyond the highest threshold is compatible with its nominal rate."""
        if not self.tail_n or len(self.tail_ci) != 2:
            return True
        lo, hi = self.tail_ci
        return lo <= self.tail_nominal * self.tail_ratio and hi >= self.tail_nominal / self.tail_ratio

    @property
    def tail_direction(self) -> str:
        """``"heavy"`` (too many null voxels beyond the threshold), ``"light"`` or ``"ok"``."""
        if self.tail_ok:
            return "ok"
        return "heavy" if self.tail_ci[0] > self.tail_nominal else "light"

    @property
    def null_sd_ok(self) -> bool:
        return abs(self.null_sd - 1) <= self.tolerance and abs(self.null_mean) <= self.tolerance

    @property
    def null_design_ok(self) -> bool:
        if not self.n_null:
            return True
        return (abs(self.null_design_null_sd - 1) <= self.tolerance
                and abs(self.null_design_null_mean) <= self.tolerance)

    @property
    def direction(self) -> str:
        """``"calibrated"``, ``"liberal"`` (null too wide: p-values too small), ``"conservative"`` or ``"shifted"``."""
        if not self.null_sd_ok:
            sd = self.null_sd
        elif not self.null_design_ok:
            sd = self.null_design_null_sd
        elif not self.tail_ok:
            return "liberal" if self.tail_direction == "heavy" else "conservative"
        else:
            return "calibrated"
        if abs(sd - 1) <= self.tolerance:
            return "shifted"
        return "liberal" if sd > 1 else "conservative"

    @property
    def rows(self) -> list[dict]:
        """One dict per threshold: threshold, nominal, observed, null (pooled designs), ratios to nominal."""
        return [dict(threshold=t, nominal=nom, observed=obs, null=nul,
                     observed_ratio=obs / nom, null_ratio=nul / nom)
                for t, nom, obs, nul in zip(self.thresholds, self.nominal_share, self.observed_share,
                                            self.null_design_pooled_share or (float("nan"),) * len(self.thresholds),
                                            strict=True)]

    @property
    def strictest(self) -> dict:
        """The row of the highest threshold (3.29 by default)."""
        return self.rows[-1]

    @property
    def sd_low(self) -> float:
        return 1 - self.tolerance

    @property
    def sd_high(self) -> float:
        return 1 + self.tolerance


# --------------------------------------------------------------------------------------------
# pieces
# --------------------------------------------------------------------------------------------

def empirical_null(z: np.ndarray, window: float = 1.5) -> tuple[float, float]:
    """Mean and SD of a normal fitted to the central part of ``z`` (Efron, 2004).

    Maximum-likelihood fit of a normal truncated to ``[median - window, median + window]``
    (the "MLE" empirical null of Efron's locfdr, without the non-null proportion). Tail
    voxels, where true effects live, do not enter the fit.

    Returns
    -------
    (mean, sd) : tuple of float
    """
    from scipy import optimize, stats

    z = np.asarray(z, dtype=float)
    z = z[np.isfinite(z)]
    med = float(np.median(z))
    lo, hi = med - window, med + window
    x = z[(z >= lo) & (z <= hi)]
    mad = 1.4826 * float(np.median(np.abs(z - med)))
    n, s1, s2 = x.size, x.sum(), np.sum(x * x)

    def nll(params):
        mu, log_sd = params
        sd = np.exp(log_sd)
        mass = stats.norm.cdf((hi - mu) / sd) - stats.norm.cdf((lo - mu) / sd)
        sq = (s2 - 2 * mu * s1 + n * mu * mu) / (sd * sd)
        return 0.5 * sq + n * log_sd + n * np.log(max(mass, 1e-300))

    fit = optimize.minimize(nll, x0=[med, np.log(max(mad, 1e-3))], method="Nelder-Mead",
                            options=dict(xatol=1e-6, fatol=1e-8, maxiter=2000))
    mu, log_sd = fit.x
    return float(mu), float(np.exp(log_sd))


def _shares(z: np.ndarray, thresholds) -> tuple[float, ...]:
    a = np.abs(z)
    return tuple(float(np.mean(a > t)) for t in thresholds)


def choose_null_shifts(design_matrix: pd.DataFrame, contrast_vector, n_null: int = 6, *,
                       max_corr: float = 0.2, min_gap: int = 2) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Circular shifts (in scans) of the contrast regressor that are nearly uncorrelated with it.

    The contrast regressor ``X @ c`` and its shifted copies are residualised against the nuisance
    columns (zero weight in ``c``); shifts are taken in order of increasing absolute correlation,
    at least ``min_gap`` scans apart, and only if ``|corr| <= max_corr``.

    Returns
    -------
    shifts, correlations : tuple of int, tuple of float
        Shifts are signed, in scans, within (-n/2, n/2]; ``np.roll(x, shift)`` applies one.
    """
    X = np.asarray(design_matrix, dtype=float)
    c = np.asarray(contrast_vector, dtype=float).ravel()
    n = X.shape[0]
    nuisance = X[:, c == 0]
    P = np.eye(n) - nuisance @ np.linalg.pinv(nuisance) if nuisance.size else np.eye(n)
    x = X @ c
    xr = P @ x
    corrs = []
    for k in range(1, n):
        xs = P @ np.roll(x, k)
        denom = np.linalg.norm(xs) * np.linalg.norm(xr)
        corrs.append((abs(float(xs @ xr / denom)) if denom > 0 else 1.0, k, float(xs @ xr / denom) if denom else 1.0))
    picked: list[tuple[int, float]] = []
    for abs_r, k, r in sorted(corrs):
        if abs_r > max_corr or len(picked) == n_null:
            break
        if all(min(abs(k - j), n - abs(k - j)) >= min_gap for j, _ in picked):
            picked.append((k, r))
    picked = sorted(((k - n if k > n // 2 else k), r) for k, r in picked)  # signed: -3 rather than n - 3
    return tuple(k for k, _ in picked), tuple(r for _, r in picked)


@dataclass(frozen=True)
class NullDesigns:
    """Null design matrices and how they relate to the real design (see :func:`permuted_block_designs`)."""

    designs: tuple  # DataFrames, columns as the real design
    corr: tuple[float, ...]  # each null contrast regressor vs the real one (nuisance projected out)
    pair_corr: tuple[tuple[float, ...], ...]  # null vs null
    orders: tuple[tuple[int, ...], ...]  # segment order of each design
    block_scans: int
    method: str


def _residual(X: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The contrast regressor ``X @ c`` with the nuisance columns (weight 0) projected out, unit norm."""
    nuisance = X[:, c == 0]
    x = X @ c
    if nuisance.size:
        x = x - nuisance @ np.linalg.lstsq(nuisance, x, rcond=None)[0]
    norm = np.linalg.norm(x)
    return x / norm if norm > 0 else x


def _block_scans(x: np.ndarray) -> int:
    """Typical length (scans) of the on and off periods of a regressor: the median run above/below mid-range."""
    on = x > (x.min() + x.max()) / 2
    edges = np.flatnonzero(np.diff(on.astype(int))) + 1
    runs = np.diff(np.r_[0, edges, on.size])
    return max(1, int(np.median(runs))) if runs.size > 1 else max(1, on.size // 4)


def permuted_block_designs(design_matrix: pd.DataFrame, contrast_vector, n_null: int = 6, *, events=None,
                           design_fn=None, t_r: float | None = None, seed: int = 0, max_corr: float = 0.25,
                           n_candidates: int = 4000) -> NullDesigns:
    """Null designs that put the task blocks in another order, nearly orthogonal to the real design and each other.

    The run is cut into segments of one block (the median on/off period of the contrast regressor, in scans;
    a remainder at the end stays in place) and the segments are permuted. With ``events`` and ``design_fn``
    (``events -> design matrix``, e.g. the pipeline's own design builder) the task regressors are rebuilt
    from the moved events, so each null design is convolved with the HRF like the real one; otherwise the
    rows of the task columns are moved. Candidate orders are drawn with a seeded generator and kept only
    when their contrast regressor (nuisance projected out) has ``|r| <= max_corr`` with the real one and
    with every null regressor kept so far.

    Returns
    -------
    NullDesigns
        Up to ``n_null`` designs (fewer when the design does not allow more) with their correlations.
    """
    X = np.asarray(design_matrix, dtype=float)
    c = np.asarray(contrast_vector, dtype=float).ravel()
    n = X.shape[0]
    task = c != 0
    L = _block_scans(X @ c)
    n_seg = n // L
    if n_null <= 0 or n_seg < 3:
        return NullDesigns((), (), (), (), L, "")
    # responses of each segment's task input, moved to the start of the run: a null regressor is the sum of
    # these, each shifted to the segment's new place (whole scans: a segment is a whole number of scans)
    cols = [j for j in range(X.shape[1]) if task[j]]
    pieces = np.zeros((n_seg, n, len(cols)))
    if events is not None and design_fn is not None and t_r:
        method = "permuted blocks of events"
        seg_s = L * float(t_r)
        seg = np.minimum((events["onset"].to_numpy(dtype=float) // seg_s).astype(int), n_seg)
        names = list(design_matrix.columns)
        for j in range(n_seg):
            ev = events[seg == j].copy()
            if ev.empty:
                continue
            ev["onset"] = ev["onset"] - j * seg_s
            dm = design_fn(ev.reset_index(drop=True))
            for k, col in enumerate(cols):
                if names[col] in dm.columns:
                    pieces[j, :, k] = dm[names[col]].to_numpy(dtype=float)
        tail = np.zeros((n, len(cols)))
        if (seg == n_seg).any():  # events in the remainder keep their place
            dm = design_fn(events[seg == n_seg].reset_index(drop=True))
            tail = np.column_stack([dm[names[col]].to_numpy(dtype=float) if names[col] in dm.columns
                                    else np.zeros(n) for col in cols])
    else:
        method = "permuted blocks of design rows"
        for j in range(n_seg):
            pieces[j, :L] = X[j * L:(j + 1) * L][:, cols]
        tail = np.zeros((n, len(cols)))
        tail[n_seg * L:] = X[n_seg * L:][:, cols]

    def build(order) -> np.ndarray:
        Xn = X.copy()
        task_part = tail.copy()
        for pos, j in enumerate(order):
            shift = pos * L
            task_part[shift:] += pieces[j, :n - shift]
        Xn[:, cols] = task_part
        return Xn

    rng = np.random.default_rng(seed)
    real = _residual(X, c)
    kept: list[tuple[tuple[int, ...], np.ndarray, np.ndarray]] = []
    seen = {tuple(range(n_seg))}
    for _ in range(n_candidates):
        if len(kept) == n_null:
            break
        order = tuple(int(v) for v in rng.permutation(n_seg))
        if order in seen:
            continue
        seen.add(order)
        Xn = build(order)
        r = _residual(Xn, c)
        if abs(float(r @ real)) > max_corr or any(abs(float(r @ other)) > max_corr for _, _, other in kept):
            continue
        kept.append((order, Xn, r))
    import pandas as pd

    if method == "permuted blocks of events":  # the kept orders, rebuilt exactly from their moved events
        exact = []
        for order, _, _ in kept:
            new_pos = np.empty(n_seg + 1, dtype=int)
            new_pos[list(order)] = np.arange(n_seg)
            new_pos[n_seg] = n_seg  # the remainder stays
            ev = events.copy()
            ev["onset"] = ev["onset"].to_numpy(dtype=float) + (new_pos[seg] - seg) * seg_s
            dm = design_fn(ev.reset_index(drop=True))
            Xn = X.copy()
            for col in cols:
                Xn[:, col] = dm[names[col]].to_numpy(dtype=float) if names[col] in dm.columns else 0.0
            exact.append((order, Xn, _residual(Xn, c)))
        kept = exact
    designs = tuple(pd.DataFrame(Xn, index=design_matrix.index, columns=design_matrix.columns) for _, Xn, _ in kept)
    corr = tuple(float(r @ real) for _, _, r in kept)
    pair = tuple(tuple(float(a @ b) for _, _, b in kept) for _, _, a in kept)
    return NullDesigns(designs, corr, pair, tuple(o for o, _, _ in kept), L, method)


def z_values(labels, results, contrast_vector) -> np.ndarray:
    """z of a t contrast from ``run_glm``-style labels/results (what ``compute_contrast`` maps)."""
    from nilearn.glm.contrasts import compute_contrast

    return np.asarray(compute_contrast(labels, results, np.asarray(contrast_vector, float), "t").z_score(),
                      dtype=float).ravel()


def calibration_from_z(z: np.ndarray, null_z: list[np.ndarray] | None = None, *, noise_model: str,
                       contrast: str, t_r: float, null: NullDesigns | None = None,
                       tolerance: float = 0.1, thresholds=THRESHOLDS, null_window: float = 1.5) -> Calibration:
    """Build a :class:`Calibration` from z values already computed (observed and null designs)."""
    from scipy import stats

    z = np.asarray(z, dtype=float).ravel()
    z = z[np.isfinite(z)]
    null_z = [np.asarray(a, dtype=float).ravel() for a in (null_z or [])]
    null_z = [a[np.isfinite(a)] for a in null_z]
    pooled = np.concatenate(null_z) if null_z else np.empty(0)
    thresholds = tuple(float(t) for t in thresholds)
    null_mean, null_sd = empirical_null(z, null_window)
    if pooled.size:
        nd_mean, nd_sd = empirical_null(pooled, null_window)
    else:
        nd_mean = nd_sd = float("nan")
    probs = stats.norm.cdf(_QQ_GRID)
    keep = np.minimum(probs, 1 - probs) * z.size >= 1
    width = np.diff(_HIST_EDGES)
    hist_obs = np.histogram(z, _HIST_EDGES)[0] / (z.size * width)
    hist_null = (np.histogram(pooled, _HIST_EDGES)[0] / (pooled.size * width)) if pooled.size else np.zeros_like(width)
    med = np.median(z)
    ok_obs = abs(null_sd - 1) <= tolerance and abs(null_mean) <= tolerance
    ok_null = (not pooled.size) or (abs(nd_sd - 1) <= tolerance and abs(nd_mean) <= tolerance)
    tail_count, tail_ci = 0, ()
    if pooled.size:
        tail_count = int(np.count_nonzero(np.abs(pooled) > thresholds[-1]))
        ci = stats.binomtest(tail_count, int(pooled.size)).proportion_ci(confidence_level=0.95, method="exact")
        tail_ci = (float(ci.low), float(ci.high))
    tup = lambda a: tuple(float(v) for v in a)  # noqa: E731
    cal = Calibration(
        noise_model=noise_model, contrast=contrast, n_voxels=int(z.size),
        z_mean=float(z.mean()), z_sd=float(z.std()),
        null_mean=null_mean, null_sd=null_sd, mad_sd=float(1.4826 * np.median(np.abs(z - med))),
        null_window=float(null_window), thresholds=thresholds,
        nominal_share=tup(2 * stats.norm.sf(thresholds)),
        observed_share=_shares(z, thresholds),
        null_corr=tup(null.corr) if null else (), null_pair_corr=tuple(tup(r) for r in null.pair_corr) if null else (),
        null_design_share=tuple(_shares(a, thresholds) for a in null_z),
        null_design_pooled_share=_shares(pooled, thresholds) if pooled.size else (),
        null_design_mean=float(pooled.mean()) if pooled.size else float("nan"),
        null_design_sd=float(pooled.std()) if pooled.size else float("nan"),
        null_design_null_mean=nd_mean, null_design_null_sd=nd_sd,
        null_design_sds=tuple(float(a.std()) for a in null_z),
        qq_theoretical=tup(_QQ_GRID[keep]), qq_observed=tup(np.quantile(z, probs[keep])),
        qq_null=tup(np.quantile(pooled, probs[keep])) if pooled.size else (),
        hist_edges=tup(_HIST_EDGES), hist_observed=tup(hist_obs), hist_null=tup(hist_null),
        tolerance=float(tolerance), trustworthy=False, t_r=float(t_r),
        null_method=null.method if null else "", null_block_scans=int(null.block_scans) if null else 0,
        null_orders=tuple(tuple(o) for o in null.orders) if null else (),
        tail_count=tail_count, tail_n=int(pooled.size), tail_ci=tail_ci, tail_ratio=TAIL_RATIO,
    )
    import dataclasses

    return dataclasses.replace(cal, trustworthy=bool(ok_obs and ok_null and cal.tail_ok))


@_blas_limited
def calibrate(bold_img, design_matrix: pd.DataFrame, mask_img, *, contrast: str, t_r: float,
              noise_model: str = DEFAULT_NOISE_MODEL, n_null: int = 6, tolerance: float = 0.1,
              thresholds=THRESHOLDS, null_window: float = 1.5, max_corr: float = 0.25,
              smoothing_fwhm=None, rho_fwhm: float | None = DEFAULT_RHO_FWHM, n_jobs: int = 1,
              model=None, data_model=None, events=None, design_fn=None, seed: int = 0,
              **kwargs) -> Calibration:
    """Fit (or reuse) the model, then measure how far its z map is from N(0, 1).

    Parameters
    ----------
    bold_img : Nifti1Image
        One 4D run.
    design_matrix : DataFrame
    mask_img : Nifti1Image or None
    contrast : str
        Contrast expression by condition name, e.g. ``"listening"``.
    t_r : float
    noise_model : str
        A key of :data:`analysis.noise.NOISE_MODELS`.
    n_null : int
        Number of null designs (permuted task blocks, :func:`permuted_block_designs`); 0 skips them.
    tolerance : float
        The z map is trustworthy when the empirical-null SD is within ``1 +- tolerance``
        (and its mean within ``+- tolerance``), for the observed and the null designs.
    thresholds : tuple of float
        |z| cut-offs whose exceedance shares are reported.
    null_window : float
        Half-width of the central z region for the empirical-null fit.
    max_corr : float
        Largest allowed |correlation| of a null contrast regressor with the real one and with each other.
    events, design_fn, seed
        The run's events and the function that builds its design matrix from events: null designs are then
        rebuilt from moved events (:func:`permuted_block_designs`); ``seed`` draws the block orders.
    smoothing_fwhm, rho_fwhm, n_jobs, **kwargs
        Passed to :func:`analysis.noise.fit_first_level`.
    model : FirstLevelModel, optional
        A model already fitted on these data with ``minimize_memory=False`` (e.g. by
        :func:`analysis.noise.fit_first_level`); saves one fit. Its noise model and
        ``rho_fwhm_`` are used.
    data_model : FirstLevelModel, optional
        A model fitted on these data with ``minimize_memory=False`` under *another* noise model (e.g.
        the main model when calibrating the reference one). Its masked, scaled data and design are
        reused and ``noise_model`` is fitted on them, which gives the same z values as a new
        ``FirstLevelModel`` with the same masking and scaling, without masking the 4D image again.
        Ignored when ``model`` is given.

    Returns
    -------
    Calibration
    """
    from .contrasts import contrast_vector as expression_to_contrast_vector  # our parser: nothing is evaluated

    if model is not None:  # its own settings win
        noise_model = model.noise_model
        rho_fwhm = getattr(model, "rho_fwhm_", rho_fwhm)
    check_noise_model(noise_model)
    Y = None
    matrix_model = model if model is not None else data_model
    if hasattr(matrix_model, "z_map"):  # an analysis.noise.MatrixGLM: every fit from its matrix and projections
        design = matrix_model.design_matrices_[0]
        c = np.asarray(expression_to_contrast_vector(contrast, list(design.columns)), dtype=float)
        if model is not None:
            z = np.asarray(model.compute_contrast(c, output_type="z_score").dataobj)[
                np.asarray(model.mask_img.dataobj) != 0]
        else:
            z = data_model.z_map(design.to_numpy(dtype=float), c, noise_model, rho_fwhm=rho_fwhm)
        null_z, null = [], None
        if n_null > 0:
            null = permuted_block_designs(design, c, n_null, events=events, design_fn=design_fn, t_r=t_r,
                                          seed=seed, max_corr=max_corr)
            if null.designs:  # the new columns of all null designs projected in one pass over the data
                matrix_model.data.add_columns(np.hstack([X.to_numpy(dtype=float) for X in null.designs]))
            null_z = [matrix_model.z_map(X_null.to_numpy(dtype=float), c, noise_model, rho_fwhm=rho_fwhm)
                      for X_null in null.designs]
        return calibration_from_z(z, null_z, noise_model=noise_model, contrast=contrast, t_r=t_r, null=null,
                                  tolerance=tolerance, thresholds=thresholds, null_window=null_window)
    if model is None and data_model is not None:
        design = data_model.design_matrices_[0]
        c = np.asarray(expression_to_contrast_vector(contrast, list(design.columns)), dtype=float)
        Y = model_data(data_model)
        mask = data_model.masker_.mask_img_
        X = design.to_numpy(dtype=float)
        rho = estimate_rho(Y, X, noise_model, mask_img=mask, rho_fwhm=rho_fwhm)
        z = t_contrast_z(Y, X, rho, c)
    else:
        if model is None:
            kwargs["minimize_memory"] = False
            model = fit_first_level(bold_img, design_matrix, mask_img, t_r=t_r, noise_model=noise_model,
                                    smoothing_fwhm=smoothing_fwhm, n_jobs=n_jobs, rho_fwhm=rho_fwhm, **kwargs)
        design = model.design_matrices_[0]
        mask = model.masker_.mask_img_
        c = np.asarray(expression_to_contrast_vector(contrast, list(design.columns)), dtype=float)
        z = z_values(model.labels_[0], model.results_[0], c)
    null_z, null = [], None
    if n_null > 0:
        null = permuted_block_designs(design, c, n_null, events=events, design_fn=design_fn, t_r=t_r, seed=seed,
                                      max_corr=max_corr)
        Y = model_data(model) if Y is None else Y
        for X_null in null.designs:  # only the null contrast's z is needed: no results object per bin
            X_null = X_null.to_numpy(dtype=float)
            rho = estimate_rho(Y, X_null, noise_model, mask_img=mask, rho_fwhm=rho_fwhm)
            null_z.append(t_contrast_z(Y, X_null, rho, c))
    return calibration_from_z(z, null_z, noise_model=noise_model, contrast=contrast, t_r=t_r, null=null,
                              tolerance=tolerance, thresholds=thresholds, null_window=null_window)
