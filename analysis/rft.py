"""Random-field theory: smoothness, resels, voxel- and cluster-level family-wise error, as SPM and FSL report it.

nilearn thresholds z maps with FDR, Bonferroni or a fixed cut-off; it has no random-field inference. This module
adds it with plain numpy/scipy functions and frozen dataclasses:

Smoothness (:func:`estimate_smoothness`)
    From the GLM's residuals, standardised voxel by voxel so that each voxel's residual vector has unit length
    [@kiebel1999]. For each axis the spatial correlation ``r`` of neighbouring standardised residuals (their
    inner product, averaged over all neighbouring pairs in the mask, corrected for its small-sample bias
    ``-r (1 - r^2) / (2 dof)``) gives the roughness ``lambda = Var(du/dx)`` of the unit-variance field, and
    ``FWHM = sqrt(4 ln 2 / lambda)`` voxels. Two conversions of ``r`` are offered:

    * ``"spm"`` (default), as SPM's ``spm_est_smoothness``: ``lambda = 2 (1 - r)``, the variance of the
      finite difference, with SPM's voxel-wise covariance matrix of the three finite differences, its
      determinant averaged over the mask and SPM's rescaling of the per-axis values;
    * ``"gaussian"``, as FSL's ``smoothest``: ``lambda = -2 ln r``, exact for a Gaussian autocorrelation
      whatever its width.

    The two agree on smooth fields. On rough ones ``"spm"`` gives a larger FWHM than the kernel's (+11 %, +5 %
    and +3 % at 2, 3 and 4 voxels, +41 % at 1 voxel; ``bench/bench_rft.py``), and that is what keeps
    cluster-level inference valid on the lattice: with the kernel's own FWHM (``"gaussian"``) below about
    1.5 voxels, random field theory predicts many more, smaller clusters than the lattice has, and the
    critical cluster size becomes too small (on Gaussian fields of FWHM 1 voxel in the MNI mask, a two-sided
    cluster-level family-wise error rate of 0.37 instead of 0.05, against 0 with ``"spm"``; ``bench_rft.py
    --fwhm 1``).

Resel counts (:func:`resel_counts`)
    The intrinsic volumes ``R0..R3`` of the search volume in resels [@worsley1996], computed on the mask
    lattice from its counts of voxels, edges, faces and cubes, as SPM's ``spm_resels_vol`` does.

Euler characteristic densities (:func:`ec_densities`)
    ``rho_0..rho_3`` of a Gaussian (z) or Student t field [@worsley1996], as SPM's ``spm_ECdensity``; the
    expected Euler characteristic of the excursion set above ``u`` is ``sum_d R_d rho_d(u)``.

Voxel-level FWE (:func:`voxel_fwe_threshold`, :func:`peak_p_fwe`)
    ``P(max > u) = 1 - exp(-EC(u))``; as SPM's ``spm_uc``, the threshold reported is the lower of the
    random-field and the Bonferroni thresholds, and records which one applied.

Cluster-level FWE (:class:`ClusterTheory`)
    At a cluster-forming threshold ``u``: the expected number of clusters ``E[m]`` (the expected Euler
    characteristic), the expected number of resels per cluster ``E[n] = P(Z > u) R3 / (R3 rho_3(u))``, the
    cluster-size distribution ``P(n >= k) = exp(-beta k^(2/3))`` with ``beta = (Gamma(5/2) / E[n])^(2/3)``
    [@friston1994] (cluster size ``k`` in resels), the uncorrected cluster p-value ``P(n >= k)`` and the
    corrected one ``1 - exp(-E[m] P(n >= k))`` (Poisson clumping), as SPM's ``spm_P_RF``.

Two-sided tests count both tails: the expected numbers of maxima and of clusters are doubled (a per-tail level
of ``alpha / 2`` for a threshold, as nilearn's two-sided thresholds do), so the family-wise error is controlled
over both signs.

Values are z statistics throughout. With ``dof`` given, the field is a t field with that many degrees of
freedom (the z map is the t map converted through its p-values): a z value is turned back into the t value of
the same tail probability before the t densities are evaluated.

Examples
--------
>>> sm = smoothness_from_fwhm(8.0, mask_img)  # doctest: +SKIP
>>> voxel_fwe_threshold(sm, alpha=0.05).z_threshold  # doctest: +SKIP
>>> theory = ClusterTheory.at(3.09, sm)  # doctest: +SKIP
>>> theory.p_fwe(120)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .serial import JSON_CONFIG

# scipy is imported where used: the config imports SMOOTHNESS_METHODS from here, and must stay cheap to load

__all__ = ["FOUR_LN2", "SMOOTHNESS_METHODS", "Smoothness", "VoxelFWE", "ClusterTheory",
           "ec_densities", "expected_ec", "resel_counts", "standardize_residuals", "estimate_smoothness",
           "smoothness_from_fwhm", "smoothness_from_rpv", "smoothness_from_fsl", "read_fsl_smoothness",
           "voxel_fwe_threshold", "peak_p_fwe", "p_uncorrected", "fdr_q_values", "label_clusters",
           "cluster_fwe_map", "RFTInference", "RFT_CLUSTER_COLUMNS", "SMOOTHNESS_SOURCES", "SMOOTHNESS_METHOD_TEXT",
           "add_cluster_table_columns"]

FOUR_LN2 = 4.0 * math.log(2.0)
SMOOTHNESS_METHODS = ("spm", "gaussian")
_MIN_CORR = 1e-3  # neighbour correlation floor (FWHM ~0.3 voxel): a rougher field is white noise for RFT


# --------------------------------------------------------------------------------------------
# EC densities
# --------------------------------------------------------------------------------------------

def _as_stat(z, dof):
    """z values -> the statistic whose densities are evaluated (t of the same upper-tail probability)."""
    from scipy import stats

    z = np.asarray(z, dtype=float)
    if dof is None or not math.isfinite(dof):
        return z
    return stats.t.isf(stats.norm.sf(z), dof)


def ec_densities(u, dof: float | None = None) -> np.ndarray:
    """Euler characteristic densities ``rho_0..rho_3`` at threshold(s) ``u``, per resel (SPM's convention).

    Parameters
    ----------
    u : float or array
        Threshold in the field's own units: z for a Gaussian field (``dof=None``), t for a t field.
    dof : float, optional
        Degrees of freedom of a t field; ``None`` or ``inf`` for a Gaussian field.

    Returns
    -------
    array of shape (4, n)
        ``rho_d(u)``; ``rho_0`` is the upper-tail probability. With resel counts ``R``, the expected
        Euler characteristic is ``R @ rho``.
    """
    from scipy import special, stats

    t = np.atleast_1d(np.asarray(u, dtype=float))
    a = FOUR_LN2
    if dof is None or not math.isfinite(dof):
        b = np.exp(-t ** 2 / 2)
        return np.vstack([stats.norm.sf(t),
                          a ** 0.5 / (2 * np.pi) * b,
                          a / (2 * np.pi) ** 1.5 * b * t,
                          a ** 1.5 / (2 * np.pi) ** 2 * b * (t ** 2 - 1)])
    v = float(dof)
    c = (1 + t ** 2 / v) ** ((1 - v) / 2)
    g = math.exp(special.gammaln((v + 1) / 2) - special.gammaln(v / 2)) / math.sqrt(v / 2)
    return np.vstack([stats.t.sf(t, v),
                      a ** 0.5 / (2 * np.pi) * c,
                      a / (2 * np.pi) ** 1.5 * c * t * g,
                      a ** 1.5 / (2 * np.pi) ** 2 * c * ((v - 1) * t ** 2 / v - 1)])


def expected_ec(z, resels, dof: float | None = None) -> np.ndarray:
    """Expected Euler characteristic of the excursion set above ``z`` (z units) of a field with ``resels``."""
    rho = ec_densities(_as_stat(z, dof), dof)
    return np.asarray(resels, dtype=float) @ rho


# --------------------------------------------------------------------------------------------
# resel counts
# --------------------------------------------------------------------------------------------

def _lattice_counts(mask: np.ndarray) -> dict[str, int]:
    """Points, edges, faces and cubes of the mask lattice (all corners in the mask)."""
    m = np.asarray(mask, dtype=bool)
    ex = m[1:, :, :] & m[:-1, :, :]
    ey = m[:, 1:, :] & m[:, :-1, :]
    ez = m[:, :, 1:] & m[:, :, :-1]
    fxy = ex[:, 1:, :] & ex[:, :-1, :]
    fxz = ex[:, :, 1:] & ex[:, :, :-1]
    fyz = ey[:, :, 1:] & ey[:, :, :-1]
    cube = fxy[:, :, 1:] & fxy[:, :, :-1]
    return {k: int(np.count_nonzero(v)) for k, v in
            dict(P=m, Ex=ex, Ey=ey, Ez=ez, Fxy=fxy, Fxz=fxz, Fyz=fyz, C=cube).items()}


def resel_counts(mask, fwhm_vox) -> np.ndarray:
    """Resel counts ``R0..R3`` (intrinsic volumes in resels) of a search volume on its voxel lattice.

    As SPM's ``spm_resels_vol`` [@worsley1996]: with ``rx, ry, rz = 1 / FWHM`` (voxels), ``P`` voxels,
    ``E*`` edges, ``F**`` faces and ``C`` cubes whose corners are all in the mask::

        R0 = P - (Ex + Ey + Ez) + (Fxy + Fxz + Fyz) - C            (Euler characteristic)
        R1 = (Ex - Fxy - Fxz + C) rx + (Ey - Fxy - Fyz + C) ry + (Ez - Fxz - Fyz + C) rz
        R2 = (Fxy - C) rx ry + (Fxz - C) rx rz + (Fyz - C) ry rz
        R3 = C rx ry rz

    Parameters
    ----------
    mask : array (3D, bool) or Nifti1Image
    fwhm_vox : float or sequence of 3 floats
        FWHM along each array axis, in voxels.
    """
    m = _mask_array(mask)
    rx, ry, rz = 1.0 / np.broadcast_to(np.asarray(fwhm_vox, dtype=float), (3,))
    n = _lattice_counts(m)
    r0 = n["P"] - (n["Ex"] + n["Ey"] + n["Ez"]) + (n["Fxy"] + n["Fxz"] + n["Fyz"]) - n["C"]
    r1 = ((n["Ex"] - n["Fxy"] - n["Fxz"] + n["C"]) * rx + (n["Ey"] - n["Fxy"] - n["Fyz"] + n["C"]) * ry
          + (n["Ez"] - n["Fxz"] - n["Fyz"] + n["C"]) * rz)
    r2 = (n["Fxy"] - n["C"]) * rx * ry + (n["Fxz"] - n["C"]) * rx * rz + (n["Fyz"] - n["C"]) * ry * rz
    r3 = n["C"] * rx * ry * rz
    return np.array([r0, r1, r2, r3], dtype=float)


def _mask_array(mask) -> np.ndarray:
    data = np.asarray(mask.dataobj) if hasattr(mask, "dataobj") else np.asarray(mask)
    if data.ndim != 3:
        raise ValueError(f"a 3D mask is needed, got an array of shape {data.shape}")
    return np.isfinite(data) & (data != 0) if data.dtype.kind == "f" else data != 0


def _voxel_size(img) -> np.ndarray:
    return np.sqrt(np.sum(np.asarray(img.affine)[:3, :3] ** 2, axis=0))


# --------------------------------------------------------------------------------------------
# smoothness
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Smoothness:
    """Smoothness of a statistical field and the resel counts of its search volume.

    Attributes
    ----------
    fwhm_vox : tuple of 3 floats
        FWHM along the image axes, in voxels.
    voxel_size : tuple of 3 floats
        mm.
    resels : tuple of 4 floats
        ``R0..R3`` of the search volume (:func:`resel_counts`).
    n_voxels : int
        Voxels in the search volume (for Bonferroni).
    source : str
        ``"residuals"`` (estimated), ``"fwhm"`` (given), ``"spm_rpv"`` or ``"fsl_smoothness"`` (read).
    method : str
        Estimator for ``"residuals"`` (``"gaussian"`` or ``"spm"``), else ``""``.
    dof : float or None
        Degrees of freedom of the residuals the smoothness was estimated from.
    """

    __pydantic_config__ = JSON_CONFIG  # NaN and inf survive JSON (analysis.serial)

    fwhm_vox: tuple[float, float, float]
    voxel_size: tuple[float, float, float]
    resels: tuple[float, float, float, float]
    n_voxels: int
    source: str = "residuals"
    method: str = ""
    dof: float | None = None

    @property
    def fwhm_mm(self) -> tuple[float, float, float]:
        return tuple(float(f * v) for f, v in zip(self.fwhm_vox, self.voxel_size, strict=True))

    @property
    def rpv(self) -> float:
        """Resels per voxel, ``1 / prod(FWHM in voxels)`` (SPM's RPV, stationary)."""
        return float(1.0 / np.prod(self.fwhm_vox))

    @property
    def resel_size_vox(self) -> float:
        """Voxels per resel (FSL's RESELS)."""
        return float(np.prod(self.fwhm_vox))

    @property
    def search_resels(self) -> float:
        """``R3``, the volume of the search region in resels."""
        return float(self.resels[3])


def _from_fwhm_vox(fwhm_vox, mask_img, **kw) -> Smoothness:
    m = _mask_array(mask_img)
    fwhm_vox = tuple(float(f) for f in np.broadcast_to(np.asarray(fwhm_vox, dtype=float), (3,)))
    return Smoothness(fwhm_vox, tuple(float(v) for v in _voxel_size(mask_img)),
                      tuple(float(r) for r in resel_counts(m, fwhm_vox)), int(m.sum()), **kw)


_BLOCK_BYTES = 16 * 2 ** 20  # float64 bytes of one temporary block of residual rows in the smoothness loops


def _standardize_rows(block) -> tuple[np.ndarray, np.ndarray]:
    """Voxel-major residual rows ``(n, n_scans)`` -> a new float64 array of unit rows, and the rows that have a
    nonzero sum of squares (the others are left as they come out: never used)."""
    s = np.array(block, dtype=np.float64, order="C")
    ss = np.einsum("vt,vt->v", s, s)
    valid = np.isfinite(ss) & (ss > 0)
    scale = np.zeros_like(ss)
    scale[valid] = 1.0 / np.sqrt(ss[valid])
    s *= scale[:, None]
    return s, valid


def standardize_residuals(residuals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Residuals divided by their norm over scans, voxel by voxel [@kiebel1999].

    Parameters
    ----------
    residuals : array of shape (n_scans, n_voxels)

    Returns
    -------
    standardized : array of shape (n_voxels, n_scans)
        Voxel-major unit vectors (rows of zeros where a voxel's residuals are all zero), float64; computed in
        blocks of voxels, so no float64 copy of ``residuals`` is made besides the result.
    valid : bool array of shape (n_voxels,)
        Voxels with a nonzero residual sum of squares.
    """
    r = np.asarray(residuals)
    out = np.empty((r.shape[1], r.shape[0]))
    valid = np.empty(r.shape[1], dtype=bool)
    step = max(1, _BLOCK_BYTES // (8 * max(1, r.shape[0])))
    for start in range(0, r.shape[1], step):
        sl = slice(start, min(start + step, r.shape[1]))
        out[sl], valid[sl] = _standardize_rows(r[:, sl].T)
    return out, valid


def _residual_rows(residuals, n_voxels: int):
    """``(rows(start, stop), n_scans or None)`` for residuals given as an array (n_scans, n_voxels) or as a
    function returning the voxel-major rows ``start:stop``."""
    if callable(residuals):
        return residuals, None
    r = np.asarray(residuals)
    if r.ndim != 2 or r.shape[1] != n_voxels:
        raise ValueError(f"residuals of shape {r.shape} do not match the mask's {n_voxels} voxels")
    return (lambda start, stop: r[:, start:stop].T), int(r.shape[0])


def _unit_planes(rows, mask: np.ndarray):
    """For each plane ``i`` of the first axis: ``(i, S, index)`` with ``S`` the unit residual rows of the plane's
    mask voxels (float64, ``None`` for an empty plane) and ``index`` (the plane's shape) the row of ``S`` of each
    voxel, -1 outside the mask or where the residuals are all zero. The mask's voxels are in C order, so a
    plane's voxels are one contiguous range of rows."""
    counts = mask.reshape(mask.shape[0], -1).sum(axis=1)
    stops = np.cumsum(counts)
    for i in range(mask.shape[0]):
        start, stop = int(stops[i] - counts[i]), int(stops[i])
        index = np.full(mask.shape[1:], -1, dtype=np.int64)
        S = None
        if stop > start:
            block = rows(start, stop)
            if block.ndim != 2 or block.shape[0] != stop - start:
                raise ValueError(f"residual rows {start}:{stop} have shape {block.shape}")
            S, valid = _standardize_rows(block)
            del block
            index[mask[i]] = np.where(valid, np.arange(stop - start), -1)
        yield i, S, index


def _pair_products(Sa: np.ndarray, a: np.ndarray, Sb: np.ndarray, b: np.ndarray, chunk: int) -> np.ndarray:
    """``sum_t Sa[a, t] * Sb[b, t]`` for each pair, in chunks (voxel-major unit rows)."""
    out = np.empty(len(a))
    for i in range(0, len(a), chunk):
        out[i:i + chunk] = np.einsum("vt,vt->v", Sa[a[i:i + chunk]], Sb[b[i:i + chunk]])
    return out


def _plane_pairs(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the pairs (voxel of ``lo``, the voxel at the same place of ``hi``) both in the mask, in C order."""
    both = (lo >= 0) & (hi >= 0)
    return lo[both], hi[both]


def estimate_smoothness(residuals, mask_img, dof: float | None = None, method: str = "spm") -> Smoothness:
    """Smoothness and resel counts from GLM residuals, as FSL's ``smoothest`` or SPM's ``spm_est_smoothness``.

    The residuals are standardised and used plane by plane of the first image axis (two neighbouring planes at a
    time, in float64), so no standardised copy of the whole residual matrix is ever made: given as a function,
    the residuals are never held whole at all.

    Parameters
    ----------
    residuals : array of shape (n_scans, n_voxels), or a function
        Residuals (whitened, for a whitened model) in nilearn's masker order: the mask's nonzero voxels in
        C order (any float type; float32 is enough, every product is taken in float64). Or a function
        ``rows(start, stop)`` returning the residuals of voxels ``start:stop`` voxel-major, shape
        ``(stop - start, n_scans)`` (e.g. :meth:`analysis.noise.MatrixGLM.whitened_residual_rows`).
    mask_img : Nifti1Image
        The mask the columns of ``residuals`` come from; it is also the search volume of the resel counts.
    dof : float, optional
        Residual degrees of freedom (default: the number of scans), for the bias correction of the
        neighbour correlations.
    method : {"spm", "gaussian"}
        How a neighbour correlation becomes a roughness (module docstring).

    Returns
    -------
    Smoothness
    """
    if method not in SMOOTHNESS_METHODS:
        raise ValueError(f"unknown smoothness method {method!r}; valid choices: {SMOOTHNESS_METHODS}")
    mask = _mask_array(mask_img)
    rows, n_scans = _residual_rows(residuals, int(mask.sum()))
    search = np.zeros(mask.shape, dtype=bool)
    sums, counts = np.zeros(4), np.zeros(4, dtype=np.int64)  # sums over the planes (of pairs or base voxels)
    prev = None
    for i, S, index in _unit_planes(rows, mask):
        search[i] = index >= 0
        if S is not None:
            n_scans = S.shape[1] if n_scans is None else n_scans
            chunk = max(1, _BLOCK_BYTES // (8 * S.shape[1]))
        if method == "gaussian":
            if prev is not None and prev[0] is not None and S is not None:
                a, b = _plane_pairs(prev[1], index)
                sums[0] += _pair_products(prev[0], a, S, b, chunk).sum()
                counts[0] += a.size
            if S is not None:
                for axis, (lo, hi) in ((1, (index[:-1], index[1:])), (2, (index[:, :-1], index[:, 1:]))):
                    a, b = _plane_pairs(lo, hi)
                    sums[axis] += _pair_products(S, a, S, b, chunk).sum()
                    counts[axis] += a.size
        elif prev is not None and prev[0] is not None and S is not None:
            L = _spm_covariances(prev[0], prev[1], S, index, chunk)
            sums += _spm_resel_terms(L).sum(axis=0)
            counts += len(L)
        prev = (S, index)
    del prev, S
    if n_scans is None:
        raise ValueError("no voxel in the mask to estimate the smoothness from")
    dof = float(n_scans if dof is None else dof)
    if method == "gaussian":
        fwhm = []
        for axis in range(3):
            if counts[axis] == 0:
                fwhm.append(math.inf)
                continue
            corr = float(sums[axis] / counts[axis])  # mean inner product of neighbouring unit residuals
            corr *= 1 + (1 - corr ** 2) / (2 * dof)  # small-sample bias of a correlation of dof pairs
            corr = min(max(corr, _MIN_CORR), 1 - 1e-12)
            fwhm.append(math.sqrt(FOUR_LN2 / (-2.0 * math.log(corr))))
    else:
        fwhm = _spm_fwhm(sums / counts)
    return _from_fwhm_vox(fwhm, _img_like(search, mask_img), source="residuals", method=method, dof=dof)


def _img_like(data: np.ndarray, img):
    import nibabel as nib

    return nib.Nifti1Image(data.astype(np.uint8), img.affine)


def _spm_covariances(S0: np.ndarray, index0: np.ndarray, S1: np.ndarray, index1: np.ndarray,
                     chunk: int) -> np.ndarray:
    """Inner products ``L`` (n, 3, 3) of the forward differences of the unit residuals along the three axes, for
    the base voxels of one plane (``S0``, ``index0``, C order) whose three forward neighbours are in the mask (the
    one along the first axis in the next plane, ``S1``, ``index1``)."""
    base = index0[:-1, :-1]
    nb = [(S1, index1[:-1, :-1]), (S0, index0[1:, :-1]), (S0, index0[:-1, 1:])]
    ok = (base >= 0) & (nb[0][1] >= 0) & (nb[1][1] >= 0) & (nb[2][1] >= 0)
    v0 = base[ok]
    vs = [(s, n[ok]) for s, n in nb]
    L = np.empty((len(v0), 3, 3))
    for i in range(0, len(v0), chunk):
        s0 = S0[v0[i:i + chunk]]
        d = []
        for s, v in vs:
            diff = s[v[i:i + chunk]]
            diff -= s0
            d.append(diff)
        del s0
        for p in range(3):
            for q in range(p, 3):
                L[i:i + chunk, p, q] = L[i:i + chunk, q, p] = np.einsum("vt,vt->v", d[p], d[q])
    return L


def _spm_resel_terms(L: np.ndarray) -> np.ndarray:
    """Per base voxel (n, 4): resels of the voxel from the determinant of ``L``, and along each axis."""
    det = np.clip(np.linalg.det(L), 0, None)
    return np.column_stack([np.sqrt(det / FOUR_LN2 ** 3),
                            np.sqrt(np.stack([L[:, i, i] for i in range(3)], axis=1) / FOUR_LN2)])


def _spm_fwhm(mean_terms: np.ndarray) -> list[float]:
    """``spm_est_smoothness`` from the means over the base voxels of :func:`_spm_resel_terms`: the determinant's
    resels averaged, shared between the axes as the per-axis ones."""
    resel_img, resel_xyz = mean_terms[0], mean_terms[1:]
    resel = resel_img ** (1 / 3) * (resel_xyz / np.prod(resel_xyz) ** (1 / 3))
    return [float(1.0 / x) for x in resel]


def smoothness_from_fwhm(fwhm_mm, mask_img) -> Smoothness:
    """Smoothness given by the user as FWHM in mm (one value, or one per image axis), on ``mask_img``."""
    fwhm_mm = np.broadcast_to(np.asarray(fwhm_mm, dtype=float), (3,))
    if not np.all(fwhm_mm > 0):
        raise ValueError(f"FWHM must be > 0 mm, got {fwhm_mm.tolist()}")
    return _from_fwhm_vox(fwhm_mm / _voxel_size(mask_img), mask_img, source="fwhm")


def smoothness_from_rpv(rpv_img, mask_img) -> Smoothness:
    """Smoothness from SPM's resels-per-voxel image (``RPV.nii``): its mean over the mask, as SPM's global RPV.

    The per-axis FWHM is not recoverable from RPV, so it is taken as isotropic in voxels, ``RPV^(-1/3)``.
    The RPV image must be on the grid of ``mask_img``.
    """
    import nibabel as nib

    img = nib.load(str(rpv_img)) if isinstance(rpv_img, (str, Path)) else rpv_img
    data = np.asarray(img.dataobj, dtype=float)
    mask = _mask_array(mask_img)
    if data.shape[:3] != mask.shape or not np.allclose(img.affine, mask_img.affine, atol=1e-3):
        raise ValueError(f"{rpv_img}: the RPV image is not on the grid of the statistical map "
                         f"({data.shape[:3]} vs {mask.shape})")
    values = data.reshape(mask.shape)[mask]
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        raise ValueError(f"{rpv_img}: no positive resels-per-voxel value inside the map's mask")
    return _from_fwhm_vox(float(values.mean()) ** (-1 / 3), mask_img, source="spm_rpv")


def read_fsl_smoothness(path) -> dict[str, float]:
    """Parse an FSL ``smoothness`` file (``smoothest`` output: ``DLH``, ``VOLUME``, ``RESELS`` lines)."""
    out: dict[str, float] = {}
    for line in Path(path).read_text().splitlines():
        m = re.match(r"\s*([A-Za-z]+)\s+([-+0-9.eE]+)", line)
        if m:
            out[m.group(1).upper()] = float(m.group(2))
    if "DLH" not in out and "RESELS" not in out:
        raise ValueError(f"{path}: not an FSL smoothness file (no DLH or RESELS line)")
    return out


def smoothness_from_fsl(path, mask_img) -> Smoothness:
    """Smoothness from FSL's ``smoothness`` file.

    FSL's random-field p-values use ``DLH`` (``sqrt(det(Lambda))`` in voxels^-3, after its degrees-of-freedom
    correction), so RPV is ``DLH / (4 ln 2)^(3/2)`` when ``DLH`` is given, else ``1 / RESELS``; the FWHM is
    taken as isotropic in voxels.
    """
    values = read_fsl_smoothness(path)
    rpv = values["DLH"] / FOUR_LN2 ** 1.5 if "DLH" in values else 1.0 / values["RESELS"]
    if not rpv > 0:
        raise ValueError(f"{path}: smoothness must be positive")
    return _from_fwhm_vox(rpv ** (-1 / 3), mask_img, source="fsl_smoothness")


# --------------------------------------------------------------------------------------------
# voxel level
# --------------------------------------------------------------------------------------------

def _tails(two_sided: bool) -> int:
    return 2 if two_sided else 1


def p_uncorrected(z, two_sided: bool = False) -> np.ndarray:
    """Uncorrected p-value of z (of ``|z|`` doubled when two-sided)."""
    from scipy import stats

    z = np.asarray(z, dtype=float)
    return np.minimum(1.0, _tails(two_sided) * stats.norm.sf(np.abs(z) if two_sided else z))


def peak_p_fwe(z, smoothness: Smoothness, dof: float | None = None, two_sided: bool = False) -> np.ndarray:
    """Voxel-level FWE-corrected p-value of peak height(s) ``z``: the lower of random-field and Bonferroni.

    ``1 - exp(-tails EC(z))`` and ``tails n_voxels P(Z > z)`` (capped at 1), with ``|z|`` when two-sided.
    """
    from scipy import stats

    z = np.abs(np.asarray(z, dtype=float)) if two_sided else np.asarray(z, dtype=float)
    tails = _tails(two_sided)
    ec = np.maximum(expected_ec(z.ravel(), smoothness.resels, dof), 0.0)
    p_rft = -np.expm1(-tails * ec)
    p_bonf = np.minimum(1.0, tails * smoothness.n_voxels * stats.norm.sf(z.ravel()))
    return np.minimum(p_rft, p_bonf).reshape(z.shape)


@dataclass(frozen=True)
class VoxelFWE:
    """Voxel-level FWE threshold (z), the random-field and Bonferroni candidates, and which one applied."""

    __pydantic_config__ = JSON_CONFIG  # NaN and inf survive JSON (analysis.serial)

    alpha: float
    two_sided: bool
    z_rft: float
    z_bonferroni: float
    expected_ec_at_threshold: float

    @property
    def z_threshold(self) -> float:
        return min(self.z_rft, self.z_bonferroni)

    @property
    def method(self) -> str:
        """``"random field theory"`` or ``"Bonferroni"``: the lower threshold (SPM's rule)."""
        return "random field theory" if self.z_rft <= self.z_bonferroni else "Bonferroni"


def voxel_fwe_threshold(smoothness: Smoothness, alpha: float = 0.05, dof: float | None = None,
                        two_sided: bool = False) -> VoxelFWE:
    """The z above which a voxel is significant at FWE ``alpha`` (SPM's ``spm_uc``: min of RFT and Bonferroni).

    The random-field threshold solves ``1 - exp(-tails EC(u)) = alpha`` for the largest root (u > 1).
    """
    from scipy import optimize, stats

    tails = _tails(two_sided)
    target = -math.log1p(-alpha) / tails  # EC per tail
    f = lambda u: float(expected_ec(u, smoothness.resels, dof)[0]) - target  # noqa: E731
    lo, hi = 1.0, 15.0  # z = 15: p ~ 4e-51, far beyond any search volume
    z_rft = optimize.brentq(f, lo, hi, xtol=1e-10) if f(lo) > 0 else lo
    z_bonf = float(stats.norm.isf(alpha / (tails * smoothness.n_voxels)))
    ec = float(expected_ec(min(z_rft, z_bonf), smoothness.resels, dof)[0])
    return VoxelFWE(float(alpha), bool(two_sided), float(z_rft), z_bonf, ec)


def fdr_q_values(z, two_sided: bool = False) -> np.ndarray:
    """Benjamini-Hochberg q-value of every voxel (voxel-wise FDR, as nilearn's FDR threshold)."""
    p = p_uncorrected(np.asarray(z, dtype=float).ravel(), two_sided)
    n = p.size
    order = np.argsort(p, kind="stable")
    q = p[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(q[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1.0)
    return out.reshape(np.shape(z))


# --------------------------------------------------------------------------------------------
# cluster level
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClusterTheory:
    """Random-field expectations at a cluster-forming threshold (SPM's ``spm_P_RF`` with ``n = 1``).

    Attributes
    ----------
    cdt_z : float
        Cluster-forming threshold (z; ``|z|`` when two-sided).
    two_sided : bool
        Clusters of both signs are tested together; the expected counts below are per tail.
    expected_clusters : float
        ``E[m]``, the expected Euler characteristic of one tail's excursion set.
    expected_resels : float
        ``E[N] = P(Z > u) R3``, expected suprathreshold resels of one tail.
    expected_cluster_resels : float
        ``E[n] = E[N] / (R3 rho_3(u))``, expected resels per cluster.
    rpv : float
        Resels per voxel, converting cluster sizes in voxels to resels.
    """

    __pydantic_config__ = JSON_CONFIG  # NaN and inf survive JSON (analysis.serial)

    cdt_z: float
    two_sided: bool
    expected_clusters: float
    expected_resels: float
    expected_cluster_resels: float
    rpv: float

    @classmethod
    def at(cls, cdt_z: float, smoothness: Smoothness, dof: float | None = None,
           two_sided: bool = False) -> "ClusterTheory":
        """Expectations at cluster-forming threshold ``cdt_z`` for a field of ``smoothness``."""
        u = float(cdt_z)
        rho = ec_densities(_as_stat(u, dof), dof)[:, 0] + np.finfo(float).eps  # SPM adds eps
        R = np.asarray(smoothness.resels, dtype=float)
        em = float(R @ rho)
        en_total = float(rho[0] * R[3])
        en = en_total / float(R[3] * rho[3])
        return cls(u, bool(two_sided), em, en_total, en, smoothness.rpv)

    @property
    def expected_voxels(self) -> float:
        """Expected suprathreshold voxels of one tail."""
        return self.expected_resels / self.rpv

    @property
    def expected_cluster_voxels(self) -> float:
        return self.expected_cluster_resels / self.rpv

    @property
    def beta(self) -> float:
        """``(Gamma(5/2) / E[n])^(2/3)`` of ``P(n >= k) = exp(-beta k^(2/3))`` (k in resels)."""
        return (math.gamma(2.5) / self.expected_cluster_resels) ** (2 / 3)

    def p_uncorrected(self, k_voxels) -> np.ndarray:
        """``P(n >= k)`` for one cluster of ``k_voxels`` voxels (cluster p(unc))."""
        k = np.asarray(k_voxels, dtype=float) * self.rpv
        return np.exp(-self.beta * k ** (2 / 3))

    def p_fwe(self, k_voxels) -> np.ndarray:
        """Cluster-level FWE-corrected p-value: ``1 - exp(-tails E[m] P(n >= k))``."""
        return -np.expm1(-_tails(self.two_sided) * self.expected_clusters * self.p_uncorrected(k_voxels))

    def extent_threshold(self, alpha: float = 0.05) -> int:
        """Smallest cluster size (voxels) whose cluster-level FWE p-value is below ``alpha``."""
        em = _tails(self.two_sided) * self.expected_clusters
        need = -math.log1p(-alpha) / em  # P(n >= k) must be below this
        if need >= 1:
            k = 1
        else:
            k = max(1, int(math.floor((math.log(1 / need) / self.beta) ** 1.5 / self.rpv)))
        while self.p_fwe(k) >= alpha:
            k += 1
        while k > 1 and self.p_fwe(k - 1) < alpha:
            k -= 1
        return k


def _faces():
    from scipy import ndimage

    return ndimage.generate_binary_structure(3, 1)


def label_clusters(z: np.ndarray, cdt_z: float, two_sided: bool = False) -> list[tuple[int, np.ndarray]]:
    """Face-connected clusters above ``cdt_z`` (and below ``-cdt_z`` when two-sided), as (sign, label array)."""
    from scipy import ndimage

    out = []
    for sign in ((1, -1) if two_sided else (1,)):
        lab, _ = ndimage.label(sign * np.asarray(z) > cdt_z, _faces())
        out.append((sign, lab))
    return out


def cluster_fwe_map(z: np.ndarray, theory: ClusterTheory, alpha: float = 0.05) -> tuple[np.ndarray, int]:
    """z values of the voxels in clusters significant at cluster-level FWE ``alpha``, 0 elsewhere.

    Returns the map and the critical extent in voxels (:meth:`ClusterTheory.extent_threshold`).
    """
    z = np.asarray(z, dtype=float)
    k_min = theory.extent_threshold(alpha)
    keep = np.zeros(z.shape, dtype=bool)
    for _, lab in label_clusters(z, theory.cdt_z, theory.two_sided):
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        keep |= (sizes >= k_min)[lab]
    return np.where(keep, z, 0.0), k_min


# --------------------------------------------------------------------------------------------
# the report's summary and the SPM columns of its cluster tables
# --------------------------------------------------------------------------------------------

#: Columns :func:`add_cluster_table_columns` adds (SPM's ``spm_list``: cluster p(FWE), p(unc); peak p(FWE), q(FDR)).
RFT_CLUSTER_COLUMNS = ["Cluster p(FWE)", "Cluster p(unc)", "Peak p(FWE)", "Peak q(FDR)"]

SMOOTHNESS_SOURCES = {
    "residuals": "estimated from the standardised residuals of the GLM",
    "fwhm": "given in the configuration as a FWHM",
    "spm_rpv": "read from SPM's resels-per-voxel image",
    "fsl_smoothness": "read from FSL's smoothness file",
}

SMOOTHNESS_METHOD_TEXT = {
    "gaussian": "through the correlation of neighbouring residuals along each axis, converted to a FWHM under a "
                "Gaussian autocorrelation as FSL's smoothest does",
    "spm": "through the covariance of their spatial derivatives, as SPM's spm_est_smoothness does",
}


@dataclass(frozen=True)
class RFTInference:
    """Random-field inference of one analysis: smoothness, voxel-level FWE, cluster-level FWE at the CDT."""

    __pydantic_config__ = JSON_CONFIG  # NaN and inf survive JSON (analysis.serial)

    smoothness: Smoothness
    dof: float | None  # t-field degrees of freedom (None: Gaussian field)
    alpha: float
    cdt_alpha: float
    voxel: VoxelFWE
    cluster: ClusterTheory  # at the cluster-forming threshold
    cluster_extent: int  # voxels: the smallest cluster significant at cluster-level FWE alpha

    @classmethod
    def compute(cls, smoothness: Smoothness, *, alpha: float = 0.05, cdt_alpha: float = 0.001,
                dof: float | None = None, two_sided: bool = False) -> "RFTInference":
        """Voxel-level threshold and cluster-level critical extent at CDT ``p < cdt_alpha`` (per tail ``/2`` if
        two-sided, as nilearn's uncorrected threshold)."""
        from scipy import stats

        cdt_z = float(stats.norm.isf(cdt_alpha / _tails(two_sided)))
        theory = ClusterTheory.at(cdt_z, smoothness, dof=dof, two_sided=two_sided)
        return cls(smoothness, dof, float(alpha), float(cdt_alpha),
                   voxel_fwe_threshold(smoothness, alpha, dof=dof, two_sided=two_sided), theory,
                   theory.extent_threshold(alpha))

    @property
    def two_sided(self) -> bool:
        return self.cluster.two_sided

    @property
    def source_text(self) -> str:
        return SMOOTHNESS_SOURCES[self.smoothness.source]

    @property
    def method_text(self) -> str:
        """How the smoothness was estimated (empty unless from residuals)."""
        return SMOOTHNESS_METHOD_TEXT.get(self.smoothness.method, "") if self.smoothness.source == "residuals" else ""

    @property
    def is_t_field(self) -> bool:
        return self.dof is not None

    @property
    def expected_clusters(self) -> float:
        """Expected number of clusters at the CDT over the tested tails (both signs when two-sided)."""
        return _tails(self.two_sided) * self.cluster.expected_clusters


def add_cluster_table_columns(table, z_values: np.ndarray, height_z: float, inference: RFTInference):
    """The cluster table with SPM's random-field and FDR columns (:data:`RFT_CLUSTER_COLUMNS`).

    Parameters
    ----------
    table : DataFrame
        :func:`analysis.inference.cluster_table`'s table (``Cluster ID``, ``Peak Stat``, ``Cluster Size (voxels)``).
    z_values : array
        Every z value in the search volume (for the voxel-wise FDR q-values).
    height_z : float
        The height threshold the table's clusters were formed at; cluster p-values are computed at it, as SPM
        does for the threshold of the displayed map.
    inference : RFTInference

    Returns
    -------
    DataFrame
        A copy with ``Cluster p(FWE)`` and ``Cluster p(unc)`` (blank for sub-peaks) and ``Peak p(FWE)``
        (:func:`peak_p_fwe`) and ``Peak q(FDR)`` (voxel-wise Benjamini-Hochberg q of the peak voxel).
    """
    import pandas as pd

    out = table.copy()
    if out.empty:
        for col in RFT_CLUSTER_COLUMNS:
            out[col] = pd.Series(dtype=float)
        return out
    two = inference.two_sided
    theory = ClusterTheory.at(height_z, inference.smoothness, dof=inference.dof, two_sided=two)
    is_cluster = out["Cluster ID"].astype(str).str.fullmatch(r"\d+").to_numpy()
    k = pd.to_numeric(out["Cluster Size (voxels)"], errors="coerce").to_numpy(dtype=float)
    out["Cluster p(FWE)"] = np.where(is_cluster, theory.p_fwe(np.nan_to_num(k)), np.nan)
    out["Cluster p(unc)"] = np.where(is_cluster, theory.p_uncorrected(np.nan_to_num(k)), np.nan)
    peak = out["Peak Stat"].to_numpy(dtype=float)
    out["Peak p(FWE)"] = peak_p_fwe(peak, inference.smoothness, inference.dof, two)
    p_all = p_uncorrected(np.asarray(z_values, dtype=float).ravel(), two)
    q_all = fdr_q_values(np.asarray(z_values, dtype=float).ravel(), two)
    order = np.argsort(p_all, kind="stable")
    out["Peak q(FDR)"] = np.interp(p_uncorrected(peak, two), p_all[order], q_all[order])
    return out
