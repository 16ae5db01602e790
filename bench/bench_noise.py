"""Calibration table of the noise models on pure noise shaped like the reference run.

84 scans, TR 7 s, seven 42 s "listening" blocks, SPM HRF, cosine drift (0.01 Hz high-pass);
pure noise on a 3 mm grid of (20, 25, 40) = 20,000 voxels. For each noise type and model: SD of
the "listening" z map, share of voxels beyond |z| > 3.29 (nominal 0.001) and the fit time; then the
fit time on ~70,000 voxels (the size of the real brain mask).

    python bench/bench_noise.py            # the table (about a minute on one core)
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn.glm.first_level import FirstLevelModel, make_first_level_design_matrix

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analysis.noise import fit_first_level  # noqa: E402

T_R, N_SCANS = 7.0, 84
ONSETS = [42, 126, 210, 294, 378, 462, 546]


def design() -> pd.DataFrame:
    events = pd.DataFrame({"onset": ONSETS, "duration": 42.0, "trial_type": "listening"})
    return make_first_level_design_matrix(np.arange(N_SCANS) * T_R, events, hrf_model="spm",
                                          drift_model="cosine", high_pass=0.01)


def noise_img(rho, shape, seed=0):
    rng = np.random.default_rng(seed)
    rho = np.broadcast_to(np.asarray(rho, float), shape)
    e = rng.standard_normal((N_SCANS, *shape)).astype(np.float32)
    y = np.empty_like(e)
    y[0] = e[0] / np.sqrt(1 - rho**2)
    for t in range(1, N_SCANS):
        y[t] = rho * y[t - 1] + e[t]
    data = np.moveaxis(100 + rng.uniform(1, 5, shape).astype(np.float32) * y, 0, -1)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    return nib.Nifti1Image(data, affine), nib.Nifti1Image(np.ones(shape, np.uint8), affine)


# (label, noise_model, extra kwargs); "ar2" is nilearn's own, outside the project's NOISE_MODELS
MODELS = [("ols", "ols", {}), ("ar1 (nilearn)", "ar1", {}), ("ar2 (nilearn)", "ar2", {}),
          ("ar1_bc voxel-wise", "ar1_bc", {"rho_fwhm": 0}), ("ar1_bc (default)", "ar1_bc", {}),
          ("ar1_pooled", "ar1_pooled", {})]


def fit(img, mask, X, model, kwargs):
    if model == "ar2":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return FirstLevelModel(noise_model="ar2", mask_img=mask, random_state=0).fit(img, design_matrices=[X])
    return fit_first_level(img, X, mask, t_r=T_R, noise_model=model, **kwargs)


def main() -> None:
    X = design()
    shape = (20, 25, 40)
    mixed = np.zeros(shape)
    mixed[:10], mixed[10:] = 0.1, 0.4
    cases = [("white", 0.0), ("AR(1) rho .10", 0.1), ("AR(1) rho .25", 0.25), ("AR(1) rho .40", 0.4),
             ("AR(1) rho .1 / .4 halves", mixed)]
    print("| noise in data | noise_model | z SD | share abs(z) > 3.29 | fit s |")
    print("|---|---|---|---|---|")
    for label, rho in cases:
        img, mask = noise_img(rho, shape, seed=1)
        for name, model, kwargs in MODELS:
            t0 = time.perf_counter()
            m = fit(img, mask, X, model, kwargs)
            dt = time.perf_counter() - t0
            z = m.compute_contrast("listening").get_fdata()
            cell = f"{z.std():.3f} | {np.mean(np.abs(z) > 3.29):.4f}"
            if np.ndim(rho):  # per half, away from the border between them
                a, b = z[2:8].ravel(), z[12:18].ravel()
                cell = (f"{a.std():.3f} / {b.std():.3f} | "
                        f"{np.mean(np.abs(a) > 3.29):.4f} / {np.mean(np.abs(b) > 3.29):.4f}")
            print(f"| {label} | {name} | {cell} | {dt:.2f} |", flush=True)
    big = (41, 41, 42)
    img, mask = noise_img(0.25, big, seed=2)
    print(f"\nfit time on {np.prod(big):,} voxels x {N_SCANS} scans:")
    for name, model, kwargs in MODELS:
        if model == "ar2":
            continue
        t0 = time.perf_counter()
        fit(img, mask, X, model, kwargs)
        print(f"  {name:20s} {time.perf_counter() - t0:.2f} s", flush=True)


if __name__ == "__main__":
    main()
