"""Random-field theory (analysis.rft) against values computed independently of its formulas.

- Gaussian EC densities: Hermite polynomials (scipy) and the derivative recursion from the normal tail.
- t EC densities: the Gaussian kinematic formula (the t rejection region is a cone in R^(dof+1); its Gaussian
  Minkowski functionals follow from the tube expansion) and, for rho_1, Rice's formula by numerical integration.
- Resel counts: intrinsic volumes of boxes in closed form; Euler characteristics of shapes with holes.
- Cluster-size law: its mean, by numerical integration, equals the expected cluster size E[N]/E[m] computed
  from the normal tail and the closed-form rho_3; Poisson clumping for the corrected p-value.
- Smoothness: Gaussian noise smoothed at a known FWHM (anisotropic, on an odd-shaped grid).

Null-data family-wise error rates are measured by ``bench/bench_rft.py``, not here.
"""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
from scipy import integrate, ndimage, special, stats

from analysis import rft

LAM = 4 * math.log(2)  # roughness of a field with FWHM 1


def _gkf_t_densities(u: float, dof: int) -> np.ndarray:
    """EC densities of a t field from the Gaussian kinematic formula (Adler & Taylor), independently of Worsley.

    T = Z0 / sqrt(sum Z_i^2 / dof) >= u is the cone {angle(z, e0) <= a}, cot a = u / sqrt(dof), in R^n, n = dof+1.
    A point at angle p > a (p < a + pi/2) and radius R lies at distance R sin(p - a) from the cone; R ~ chi_n and
    p (density sin^(n-2) p / B) are independent. Expanding P(distance <= r) in r gives the Gaussian Minkowski
    functionals M_j = E[R^-j] g^(j)(0), g(h) = int_0^arcsin(h) f(a + s) ds, and rho_j = (LAM / 2 pi)^(j/2) M_j.
    """
    n = dof + 1
    m = n - 2
    a = math.atan2(math.sqrt(dof), u)
    B = math.sqrt(math.pi) * math.exp(special.gammaln((n - 1) / 2) - special.gammaln(n / 2))
    f = lambda p: np.sin(p) ** m / B  # noqa: E731
    f1 = lambda p: m * np.sin(p) ** (m - 1) * np.cos(p) / B  # noqa: E731
    f2 = lambda p: (m * (m - 1) * np.sin(p) ** (m - 2) * np.cos(p) ** 2 - m * np.sin(p) ** m) / B  # noqa: E731
    inv_moment = lambda j: 2 ** (-j / 2) * math.exp(special.gammaln((n - j) / 2) - special.gammaln(n / 2))  # noqa: E731
    M = [integrate.quad(f, 0, a)[0], inv_moment(1) * f(a), inv_moment(2) * f1(a), inv_moment(3) * (f2(a) + f(a))]
    return np.array([(LAM / (2 * math.pi)) ** (j / 2) * M[j] for j in range(4)])


def _rice_t_rho1(u: float, dof: int) -> float:
    """Upcrossing rate of a 1D t field (FWHM 1) by Rice's formula, integrating over W = chi2_dof / dof.

    Given W = w: T = u means X = u sqrt(w); T' = (X' - u S') / sqrt(w) ~ N(0, LAM (1 + u^2 / dof) / w); so
    rho_1 = sqrt(LAM (1 + u^2/dof) / (2 pi)) * E_W[phi(u sqrt(W))].
    """
    integrand = lambda w: stats.chi2.pdf(w * dof, dof) * dof * stats.norm.pdf(u * math.sqrt(w))  # noqa: E731
    value = integrate.quad(integrand, 0, np.inf, limit=200)[0]
    return math.sqrt(LAM * (1 + u * u / dof) / (2 * math.pi)) * value


@pytest.mark.parametrize("u", [1.5, 2.5, 3.09, 4.0, 5.5])
def test_gaussian_ec_densities_are_hermite_terms_of_the_normal_tail(u):
    rho = rft.ec_densities(u)[:, 0]
    assert rho[0] == pytest.approx(stats.norm.sf(u), rel=1e-12)
    for d in (1, 2, 3):  # rho_d = LAM^(d/2) (2 pi)^(-(d+1)/2) He_(d-1)(u) exp(-u^2/2)
        expected = LAM ** (d / 2) * (2 * math.pi) ** (-(d + 1) / 2) * special.eval_hermitenorm(d - 1, u) \
            * math.exp(-u * u / 2)
        assert rho[d] == pytest.approx(expected, rel=1e-12)
    # and each density is -(LAM / 2 pi)^(1/2) times the derivative of the previous one (central differences)
    h = 1e-4
    for d in (1, 2, 3):
        deriv = (rft.ec_densities(u + h)[d - 1, 0] - rft.ec_densities(u - h)[d - 1, 0]) / (2 * h)
        assert rho[d] == pytest.approx(-math.sqrt(LAM / (2 * math.pi)) * deriv, rel=1e-6)


@pytest.mark.parametrize("dof", [5, 20, 71])
@pytest.mark.parametrize("u", [2.0, 3.5, 5.0])
def test_t_ec_densities_match_the_gaussian_kinematic_formula(u, dof):
    np.testing.assert_allclose(rft.ec_densities(u, dof)[:, 0], _gkf_t_densities(u, dof), rtol=1e-9)


@pytest.mark.parametrize("dof", [4, 12, 71])
@pytest.mark.parametrize("u", [1.0, 3.0, 4.5])
def test_t_rho1_matches_rice_formula_by_numerical_integration(u, dof):
    assert rft.ec_densities(u, dof)[1, 0] == pytest.approx(_rice_t_rho1(u, dof), rel=1e-7)


def test_t_densities_tend_to_gaussian_ones_and_z_input_is_converted():
    u = np.array([2.0, 3.0, 4.5])
    np.testing.assert_allclose(rft.ec_densities(u, 1e7), rft.ec_densities(u), rtol=1e-4)
    # expected_ec takes z: at dof 10 it equals the t densities at the t of the same tail probability
    R = np.array([1.0, 10.0, 100.0, 500.0])
    t = stats.t.isf(stats.norm.sf(u), 10)
    np.testing.assert_allclose(rft.expected_ec(u, R, 10), R @ rft.ec_densities(t, 10), rtol=1e-12)
    assert np.all(rft.expected_ec(u, R, 10) > rft.expected_ec(u, R))  # t fields have more high maxima


def test_resel_counts_of_a_box_are_its_intrinsic_volumes():
    mask = np.zeros((9, 11, 14), bool)
    mask[1:7, 2:10, 3:13] = True  # 6 x 8 x 10 voxels: sides 5, 7, 9 voxels between centres
    fwhm = (2.0, 3.0, 4.0)
    a, b, c = 5 / 2.0, 7 / 3.0, 9 / 4.0  # sides in resels
    expected = [1.0, a + b + c, a * b + a * c + b * c, a * b * c]
    np.testing.assert_allclose(rft.resel_counts(mask, fwhm), expected, rtol=1e-12)


def test_resel_count_r0_is_the_euler_characteristic():
    two = np.zeros((12, 7, 8), bool)
    two[1:4, 1:5, 1:6] = two[7:11, 2:6, 2:7] = True
    assert rft.resel_counts(two, 3.0)[0] == 2
    shell = np.zeros((9, 10, 11), bool)
    shell[1:8, 1:9, 1:10] = True
    shell[3:6, 3:7, 3:8] = False  # a cavity: EC = 2
    assert rft.resel_counts(shell, 3.0)[0] == 2
    ring = np.zeros((9, 10, 5), bool)
    ring[1:8, 1:9, 1:4] = True
    ring[3:6, 3:7, :] = False  # a tunnel: EC = 0
    assert rft.resel_counts(ring, 3.0)[0] == 0


def test_cluster_size_law_has_the_expected_mean_and_poisson_fwe():
    mask = np.ones((40, 44, 36), bool)
    sm = rft._from_fwhm_vox((3.0, 3.0, 3.0), nib.Nifti1Image(mask.astype(np.uint8), np.eye(4)))
    for u in (2.5, 3.09, 3.7):
        theory = rft.ClusterTheory.at(u, sm)
        # E[n] (resels) = P(Z > u) / rho_3(u), with rho_3 in closed form
        rho3 = LAM ** 1.5 / (2 * math.pi) ** 2 * (u * u - 1) * math.exp(-u * u / 2)
        assert theory.expected_cluster_resels == pytest.approx(stats.norm.sf(u) / rho3, rel=1e-9)
        # the law P(n >= k) = exp(-beta k^(2/3)) has mean E[n]: integrate its survival function over k (resels)
        mean = integrate.quad(lambda k: theory.p_uncorrected(k / sm.rpv), 0, np.inf)[0]
        assert mean == pytest.approx(theory.expected_cluster_resels, rel=1e-7)
        # E[m] is the expected EC from the box's closed-form resel counts
        a, b, c = 39 / 3, 43 / 3, 35 / 3
        R = np.array([1, a + b + c, a * b + a * c + b * c, a * b * c])
        g = LAM ** 0.5 / (2 * math.pi) * math.exp(-u * u / 2)
        em = R[0] * stats.norm.sf(u) + R[1] * g + R[2] * g * math.sqrt(LAM / (2 * math.pi)) * u + R[3] * rho3
        assert theory.expected_clusters == pytest.approx(em, rel=1e-9)
        k = 37
        assert theory.p_fwe(k) == pytest.approx(1 - math.exp(-em * theory.p_uncorrected(k)), rel=1e-9)
    assert theory.p_uncorrected(0) == 1.0


@pytest.mark.parametrize("two_sided", [False, True])
def test_extent_threshold_is_the_smallest_significant_cluster(two_sided):
    mask = np.ones((30, 33, 28), bool)
    sm = rft._from_fwhm_vox(2.5, nib.Nifti1Image(mask.astype(np.uint8), np.eye(4)))
    theory = rft.ClusterTheory.at(3.09, sm, dof=40, two_sided=two_sided)
    k = theory.extent_threshold(0.05)
    assert theory.p_fwe(k) < 0.05 <= theory.p_fwe(k - 1)
    z = np.zeros(mask.shape)
    z[2:2 + k, 5, 5] = 4.0  # a line cluster of exactly k voxels survives, one of k - 1 does not
    z[2:1 + k, 12, 12] = 4.0
    kept, k_min = rft.cluster_fwe_map(z, theory, 0.05)
    assert k_min == k and np.count_nonzero(kept) == k
    if two_sided:  # negative clusters are tested too
        kept, _ = rft.cluster_fwe_map(-z, theory, 0.05)
        assert np.count_nonzero(kept) == k and kept.min() == -4.0


@pytest.mark.parametrize("two_sided", [False, True])
def test_voxel_fwe_threshold_is_the_lower_of_rft_and_bonferroni(two_sided):
    mask = np.ones((40, 42, 38), bool)
    img = nib.Nifti1Image(mask.astype(np.uint8), np.eye(4))
    smooth = rft._from_fwhm_vox(4.0, img)
    fwe = rft.voxel_fwe_threshold(smooth, 0.05, two_sided=two_sided)
    tails = 2 if two_sided else 1
    assert 1 - math.exp(-tails * rft.expected_ec(fwe.z_rft, smooth.resels)[0]) == pytest.approx(0.05, rel=1e-8)
    assert fwe.z_bonferroni == pytest.approx(stats.norm.isf(0.05 / tails / mask.size))
    assert fwe.method == "random field theory" and fwe.z_threshold == fwe.z_rft < fwe.z_bonferroni
    assert rft.peak_p_fwe(fwe.z_threshold, smooth, two_sided=two_sided) == pytest.approx(0.05, rel=1e-6)
    rough = rft._from_fwhm_vox(0.6, img)  # rougher than the lattice: Bonferroni is lower
    fwe = rft.voxel_fwe_threshold(rough, 0.05, two_sided=two_sided)
    assert fwe.method == "Bonferroni" and fwe.z_threshold == fwe.z_bonferroni
    assert rft.peak_p_fwe(-fwe.z_threshold if two_sided else fwe.z_threshold, rough,
                          two_sided=two_sided) == pytest.approx(0.05, rel=1e-6)


def _smoothed_noise(rng, shape, fwhm_vox, n):
    sigma = np.asarray(fwhm_vox, dtype=float) / math.sqrt(8 * math.log(2))
    return np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap") for _ in range(n)])


@pytest.mark.parametrize("method,tol", [("gaussian", 0.04), ("spm", 0.12)])
def test_smoothness_of_smoothed_gaussian_noise_is_recovered_per_axis(rng, method, tol):
    shape = (23, 26, 29)
    mask = np.zeros(shape, bool)
    mask[2:-2, 2:-3, 3:-2] = True
    img = nib.Nifti1Image(mask.astype(np.uint8), np.diag([2.0, 3.0, 3.5, 1.0]))
    fwhm_vox = (2.0, 3.0, 4.0)  # a different width per axis: an axis mix-up fails
    data = _smoothed_noise(rng, shape, fwhm_vox, 30)
    Y = data[:, mask]
    X = np.column_stack([np.ones(30), np.linspace(-1, 1, 30)])
    resid = Y - X @ np.linalg.lstsq(X, Y, rcond=None)[0]  # GLM residuals: 28 degrees of freedom
    sm = rft.estimate_smoothness(resid, img, dof=28, method=method)
    np.testing.assert_allclose(sm.fwhm_vox, fwhm_vox, rtol=tol)
    np.testing.assert_allclose(sm.fwhm_mm, np.array(fwhm_vox) * [2.0, 3.0, 3.5], rtol=tol)
    assert sm.rpv == pytest.approx(1 / np.prod(sm.fwhm_vox))
    np.testing.assert_allclose(sm.resels, rft.resel_counts(mask, sm.fwhm_vox))
    assert sm.n_voxels == mask.sum() and sm.source == "residuals" and sm.method == method


def test_rough_and_smooth_estimators_agree_on_smooth_fields(rng):
    shape = (20, 21, 22)
    mask = np.ones(shape, bool)
    img = nib.Nifti1Image(mask.astype(np.uint8), np.eye(4))
    Y = _smoothed_noise(rng, shape, 6.0, 20)[:, mask]
    g = rft.estimate_smoothness(Y, img, method="gaussian").fwhm_vox
    s = rft.estimate_smoothness(Y, img, method="spm").fwhm_vox
    np.testing.assert_allclose(s, g, rtol=0.04)


def _reference_fwhm(resid: np.ndarray, mask: np.ndarray, dof: float, method: str) -> list[float]:
    """The whole-matrix float64 computation (every residual standardised at once), as a reference."""
    r = np.asarray(resid, dtype=np.float64)
    ss = (r * r).sum(axis=0)
    valid = ss > 0
    S = (r / np.sqrt(np.where(valid, ss, 1.0))).T
    index = np.full(mask.shape, -1)
    index[mask] = np.where(valid, np.arange(valid.size), -1)
    if method == "gaussian":
        out = []
        for axis in range(3):
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[axis], hi[axis] = slice(None, -1), slice(1, None)
            a, b = index[tuple(lo)], index[tuple(hi)]
            both = (a >= 0) & (b >= 0)
            corr = float(np.mean(np.sum(S[a[both]] * S[b[both]], axis=1)))
            corr *= 1 + (1 - corr ** 2) / (2 * dof)
            out.append(math.sqrt(LAM / (-2.0 * math.log(corr))))
        return out
    base = index[:-1, :-1, :-1]
    nb = [index[1:, :-1, :-1], index[:-1, 1:, :-1], index[:-1, :-1, 1:]]
    ok = (base >= 0) & (nb[0] >= 0) & (nb[1] >= 0) & (nb[2] >= 0)
    d = [S[n[ok]] - S[base[ok]] for n in nb]
    L = np.array([[np.sum(d[p] * d[q], axis=1) for q in range(3)] for p in range(3)]).transpose(2, 0, 1)
    resel_img = np.sqrt(np.clip(np.linalg.det(L), 0, None) / LAM ** 3).mean()
    resel_xyz = np.sqrt(np.stack([L[:, i, i] for i in range(3)], axis=1) / LAM).mean(axis=0)
    resel = resel_img ** (1 / 3) * (resel_xyz / np.prod(resel_xyz) ** (1 / 3))
    return [float(1.0 / x) for x in resel]


@pytest.mark.parametrize("method", ["spm", "gaussian"])
def test_blocked_and_float32_smoothness_equal_the_whole_matrix_float64_reference(rng, monkeypatch, method):
    import pandas as pd

    from analysis.noise import fit_matrix

    shape, n = (12, 13, 11), 40
    mask = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0) > -0.05  # an irregular search volume
    mask[0] = False  # an empty plane first and one in the middle (the blocks are planes of the first axis)
    mask[6] = False
    img = nib.Nifti1Image(mask.astype(np.uint8), np.diag([2.0, 2.5, 3.0, 1.0]))
    data = _smoothed_noise(rng, shape, (2.0, 2.5, 3.0), n)
    Y = data[:, mask] * 10.0 + 100.0
    Y[:, 5] = 100.0  # a voxel with no residual variance: left out of the estimate and of the search volume
    X = np.column_stack([np.ones(n), np.linspace(-1, 1, n), np.sin(np.arange(n) / 3.0)])
    resid = Y - X @ np.linalg.lstsq(X, Y, rcond=None)[0]
    resid[:, 5] = 0.0
    ref = _reference_fwhm(resid, mask, n - 3, method)
    monkeypatch.setattr(rft, "_BLOCK_BYTES", 8 * n * 7)  # 7 rows per block: the chunks within a plane are used
    for r in (resid, resid.astype(np.float32), lambda start, stop: resid[:, start:stop].T.astype(np.float32)):
        sm = rft.estimate_smoothness(r, img, dof=n - 3, method=method)
        np.testing.assert_allclose(sm.fwhm_vox, ref, rtol=1e-6)
        assert sm.n_voxels == mask.sum() - 1 and sm.dof == n - 3
    S, valid = rft.standardize_residuals(resid.astype(np.float32))
    assert S.dtype == np.float64 and not valid[5] and valid.sum() == mask.sum() - 1
    np.testing.assert_allclose(np.linalg.norm(S[valid], axis=1), 1.0, rtol=1e-12)

    # the matrix GLM's residual rows, computed plane by plane, give what its whole residual matrix gives
    design = pd.DataFrame(X, columns=["a", "b", "c"])
    model = fit_matrix(np.ascontiguousarray(Y.T, dtype=np.float32), design, img, "ar1")
    whole = model.whitened_residuals()
    sm_rows = rft.estimate_smoothness(model.whitened_residual_rows(), img, dof=n - 3, method=method)
    np.testing.assert_allclose(sm_rows.fwhm_vox, _reference_fwhm(whole, mask, n - 3, method), rtol=1e-6)
    assert sm_rows == rft.estimate_smoothness(model.whitened_residual_rows(), img, dof=n - 3, method=method)


def test_smoothness_from_residual_rows_never_holds_the_residual_matrix(rng):
    import tracemalloc

    shape, n = (60, 20, 20), 60  # planes of the first axis are the blocks: 60 of them
    mask = np.ones(shape, bool)
    img = nib.Nifti1Image(mask.astype(np.uint8), np.eye(4))
    Y = rng.standard_normal((mask.sum(), n)).astype(np.float32)
    whole_float64 = Y.size * 8

    def rows(start, stop):
        return Y[start:stop]

    for method in rft.SMOOTHNESS_METHODS:
        tracemalloc.start()
        try:
            rft.estimate_smoothness(rows, img, method=method)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 0.25 * whole_float64, (method, peak / whole_float64)


def test_statmap_smoothness_from_fwhm_spm_rpv_and_fsl_file_agree(tmp_path):
    mask = np.zeros((15, 16, 17), bool)
    mask[2:-2, 2:-2, 2:-2] = True
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), affine)
    given = rft.smoothness_from_fwhm(6.0, mask_img)  # 3 voxels
    assert given.fwhm_vox == (3.0, 3.0, 3.0) and given.source == "fwhm"
    rpv = np.where(mask, 1 / 27, np.nan)
    rpv_path = tmp_path / "RPV.nii"
    nib.save(nib.Nifti1Image(rpv, affine), rpv_path)
    from_spm = rft.smoothness_from_rpv(rpv_path, mask_img)
    np.testing.assert_allclose(from_spm.fwhm_vox, 3.0)
    np.testing.assert_allclose(from_spm.resels, given.resels)
    fsl = tmp_path / "smoothness"
    fsl.write_text(f"DLH {LAM ** 1.5 / 27:.10f}\nVOLUME {mask.sum()}\nRESELS 27\n")
    from_fsl = rft.smoothness_from_fsl(fsl, mask_img)
    np.testing.assert_allclose(from_fsl.resels, given.resels, rtol=1e-8)
    fsl.write_text("RESELS 27\n")  # RESELS alone also works
    np.testing.assert_allclose(rft.smoothness_from_fsl(fsl, mask_img).fwhm_vox, 3.0)
    with pytest.raises(ValueError, match="not on the grid"):
        rft.smoothness_from_rpv(nib.Nifti1Image(rpv[:-1], affine), mask_img)
    fsl.write_text("nothing here\n")
    with pytest.raises(ValueError, match="not an FSL smoothness file"):
        rft.smoothness_from_fsl(fsl, mask_img)
    with pytest.raises(ValueError, match="> 0 mm"):
        rft.smoothness_from_fwhm(0.0, mask_img)


@pytest.mark.parametrize("two_sided", [False, True])
def test_fdr_q_values_agree_with_nilearn_fdr_threshold(rng, two_sided):
    from nilearn.glm import fdr_threshold

    z = rng.standard_normal(5000)
    z[:150] += 4.0
    q = rft.fdr_q_values(z, two_sided)
    stat = np.abs(z) if two_sided else z
    thr = fdr_threshold(stat, 0.05 / 2 if two_sided else 0.05)
    assert np.array_equal(q <= 0.05, stat >= thr)


def test_results_round_trip_through_json():
    from analysis import serial

    mask = np.ones((10, 11, 12), bool)
    sm = rft._from_fwhm_vox((2.0, 2.5, 3.0), nib.Nifti1Image(mask.astype(np.uint8), np.diag([3, 3, 3, 1.0])),
                            source="residuals", method="gaussian", dof=71.0)
    assert serial.from_json(rft.Smoothness, serial.to_json(sm)) == sm
    fwe = rft.voxel_fwe_threshold(sm, 0.05, dof=71, two_sided=True)
    assert serial.from_json(rft.VoxelFWE, serial.to_json(fwe)) == fwe
    theory = rft.ClusterTheory.at(3.29, sm, dof=71, two_sided=True)
    assert serial.from_json(rft.ClusterTheory, serial.to_json(theory)) == theory
