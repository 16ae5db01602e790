"""Simulated listen-vs-rest fMRI run in MNI152 space, with known ground truth.

The SPM auditory dataset cannot always be downloaded, so tests, CI and offline
users analyse a run that this module generates. It copies the timing of the
real run (TR 7 s, 84 scans, seven 42 s blocks of "listening" starting with
rest) and lives on nilearn's bundled MNI152 3 mm grid, so no download is
needed.

The signal model, per brain voxel ``v`` and scan ``t``::

    bold[v, t] = baseline[v] * (1 + effect[v] / 100 * x[t] + drift[v, t]) + noise[v, t]

``baseline``
    EPI-like intensities built from the MNI152 tissue templates (grey matter
    ~800, white matter ~620, CSF ~950) times a smooth coil-sensitivity field
    (+/- ``bias_field``). Zero outside the brain mask.
``effect``
    The true percent signal change (the ground truth ``effect_img``): flat-topped
    ellipsoids restricted to grey matter, ``auditory_psc`` in bilateral
    auditory cortex and ``dmn_psc`` in four Default Mode hubs. Each ellipsoid has
    a plateau where the effect is exactly the nominal value and, when
    ``edge_fraction > 0``, a cosine taper at its rim (the *edge* band, recorded
    in ``edge_mask_img`` and excluded from both sensitivity and false
    discoveries by :func:`recovery`).
``x``
    The "listening" boxcar convolved with the SPM HRF (nilearn's
    :func:`~nilearn.glm.first_level.compute_regressor`), divided by the
    response to a sustained block, so ``effect`` is the plateau % change.
``drift``
    Slow drifts: a linear trend and cosines of order 1-3 (all below 0.01 Hz, so
    the 0.01 Hz cosine high-pass removes them), with spatially smooth random
    weights; ``drift_amplitude`` is the expected temporal standard deviation,
    in % of baseline.
``noise``
    AR(1) in time (``rho``), optionally smooth in space (``noise_fwhm``), with a
    marginal standard deviation of ``baseline / tSNR``, where the tSNR mixes
    ``tsnr_gm``, ``tsnr_wm`` and ``tsnr_csf`` by tissue fraction.

Everything is drawn from one :func:`numpy.random.default_rng` seeded with
``params.seed``, so a seed fixes every array. Arrays are float32.

Examples
--------
>>> from analysis.simulate import simulate_run, recovery
>>> run = simulate_run(seed=3, n_scans=12)
>>> run.bold_img.shape
(67, 79, 64, 12)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from pydantic import ConfigDict
from scipy import ndimage

from . import serial

__all__ = [
    "LISTENING_ONSETS",
    "BLOCK_DURATION",
    "TRIAL_TYPE",
    "SimulationParams",
    "GroundTruth",
    "SimulatedRun",
    "listening_events",
    "simulate_run",
    "save_simulated",
    "load_simulated",
    "recovery",
]

#: Onsets (s) of the seven "listening" blocks of the SPM auditory run.
REFERENCE_T_R = 7.0  # s, the SPM auditory run
LISTENING_ONSETS = (42.0, 126.0, 210.0, 294.0, 378.0, 462.0, 546.0)
#: Duration (s) of each "listening" block.
BLOCK_DURATION = 42.0
#: Condition name, as in the real events table.
TRIAL_TYPE = "listening"

FORMAT_VERSION = 1
_RESOLUTION_MM = 3
_HIGH_PASS_HZ = 0.01  # the report's high-pass; planted drifts stay below it
_TISSUE_BASELINE = {"gm": 800.0, "wm": 620.0, "csf": 950.0}

# (name, centre (x, y, z) mm MNI, semi-axes (x, y, z) mm)
_AUDITORY_REGIONS = (
    ("left auditory cortex", (-50.0, -20.0, 8.0), (14.0, 18.0, 10.0)),
    ("right auditory cortex", (50.0, -20.0, 8.0), (14.0, 18.0, 10.0)),
)
_DMN_REGIONS = (
    ("posterior cingulate / precuneus", (0.0, -52.0, 28.0), (9.0, 13.0, 12.0)),
    ("medial prefrontal cortex", (0.0, 52.0, -4.0), (9.0, 12.0, 12.0)),
    ("left angular gyrus", (-46.0, -66.0, 32.0), (10.0, 10.0, 10.0)),
    ("right angular gyrus", (46.0, -66.0, 32.0), (10.0, 10.0, 10.0)),
)

_FILES = {
    "bold": "bold.nii.gz",
    "events": "events.tsv",
    "truth_effect": "truth_effect.nii.gz",
    "truth_auditory_mask": "truth_auditory_mask.nii.gz",
    "truth_dmn_mask": "truth_dmn_mask.nii.gz",
    "truth_dmn_labels": "truth_dmn_labels.nii.gz",
    "truth_brain_mask": "truth_brain_mask.nii.gz",
    "truth_edge_mask": "truth_edge_mask.nii.gz",
    "anat": "anat_T1w.nii.gz",
    "params": "params.json",
}


def listening_events(t_r: float = 7.0, n_scans: int = 84) -> pd.DataFrame:
    """Events table of the SPM auditory run.

    Parameters
    ----------
    t_r : float
        Repetition time (s).
    n_scans : int
        Number of scans; blocks starting at or after ``n_scans * t_r`` are dropped.

    Returns
    -------
    DataFrame
        Columns ``onset``, ``duration`` (s) and ``trial_type`` (``"listening"``);
        rest is the implicit baseline.

    Examples
    --------
    >>> listening_events().onset.tolist()[:3]
    [42.0, 126.0, 210.0]
    """
    run_end = float(t_r) * int(n_scans)
    onsets = [onset for onset in LISTENING_ONSETS if onset < run_end]
    return pd.DataFrame({
        "onset": np.asarray(onsets, dtype=float),
        "duration": np.full(len(onsets), BLOCK_DURATION),
        "trial_type": pd.Series([TRIAL_TYPE] * len(onsets), dtype=str),
    })


def _as_tuple(value):
    """Lists (from JSON) back to nested tuples, so params stay hashable and repr-stable."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value


@dataclass(frozen=True)
class SimulationParams:
    """Parameters of the simulated run; every field has a default.

    Parameters
    ----------
    seed : int
        Seed of the random generator; fixes every array.
    n_scans : int
        Number of volumes (84 in the real run).
    t_r : float
        Repetition time (s).
    auditory_psc : float
        Plateau percent signal change in the auditory regions during listening.
    dmn_psc : float
        Plateau percent signal change in the Default Mode hubs (negative =
        deactivation; 0 plants nothing there).
    rho : float
        AR(1) coefficient of the temporal noise, in [0, 1).
    tsnr_gm, tsnr_wm, tsnr_csf : float
        Temporal SNR (baseline / noise sd) of pure grey matter, white matter and
        CSF; mixed voxels combine ``1 / tSNR`` by tissue fraction.
    drift_amplitude : float
        Expected temporal sd of the slow drift, in % of baseline (0 = none).
    n_drift_cosines : int
        Cosines (orders 1..n) in the drift, besides the linear trend. Order
        ``k`` has frequency ``k / (2 n_scans t_r)``; orders at or above the
        0.01 Hz high-pass are left out (in short runs, all of them).
    noise_fwhm : float
        FWHM (mm) of the Gaussian spatial smoothness of the noise (0 = white).
    bias_field : float
        Amplitude of the smooth multiplicative intensity bias (0.1 = +/- ~10 %).
    gm_threshold : float
        Grey-matter probability above which a voxel can carry an effect.
    edge_fraction : float
        Outer fraction of each ellipsoid's normalised radius where the effect
        tapers to zero (0 = hard-edged, no edge band).
    auditory_regions, dmn_regions : tuple
        ``(name, (x, y, z) centre mm, (a, b, c) semi-axes mm)`` per region.
    """

    __pydantic_config__ = ConfigDict(extra="forbid")

    seed: int = 0
    n_scans: int = 84
    t_r: float = 7.0
    auditory_psc: float = 2.0
    dmn_psc: float = -0.8
    rho: float = 0.3
    tsnr_gm: float = 70.0
    tsnr_wm: float = 90.0
    tsnr_csf: float = 40.0
    drift_amplitude: float = 0.5
    n_drift_cosines: int = 3
    noise_fwhm: float = 3.0
    bias_field: float = 0.1
    gm_threshold: float = 0.5
    edge_fraction: float = 0.2
    auditory_regions: tuple = _AUDITORY_REGIONS
    dmn_regions: tuple = _DMN_REGIONS

    def __post_init__(self):
        object.__setattr__(self, "auditory_regions", _as_tuple(self.auditory_regions))
        object.__setattr__(self, "dmn_regions", _as_tuple(self.dmn_regions))
        if int(self.n_scans) != self.n_scans or self.n_scans < 2:
            raise ValueError(f"n_scans must be an integer >= 2, got {self.n_scans!r}")
        if not self.t_r > 0:
            raise ValueError(f"t_r must be > 0 s, got {self.t_r!r}")
        if not 0 <= self.rho < 1:
            raise ValueError(f"rho must be in [0, 1), got {self.rho!r}")
        for name in ("tsnr_gm", "tsnr_wm", "tsnr_csf"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("drift_amplitude", "noise_fwhm", "bias_field"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 <= self.edge_fraction < 1:
            raise ValueError(f"edge_fraction must be in [0, 1), got {self.edge_fraction!r}")
        if not 0 <= self.gm_threshold <= 1:
            raise ValueError(f"gm_threshold must be in [0, 1], got {self.gm_threshold!r}")
        if int(self.n_drift_cosines) != self.n_drift_cosines or self.n_drift_cosines < 0:
            raise ValueError(f"n_drift_cosines must be an integer >= 0, got {self.n_drift_cosines!r}")
        for group in ("auditory_regions", "dmn_regions"):
            for region in getattr(self, group):
                if len(region) != 3 or len(region[1]) != 3 or len(region[2]) != 3 or min(region[2]) <= 0:
                    raise ValueError(f"{group}: each region is (name, (x, y, z), (a, b, c)) with "
                                     f"positive semi-axes, got {region!r}")


@dataclass(frozen=True)
class GroundTruth:
    """What was planted, on the BOLD grid.

    Attributes
    ----------
    effect_img : Nifti1Image
        Signed plateau percent signal change per voxel (float32; 0 = nothing planted).
    auditory_mask_img : Nifti1Image
        Voxels of the auditory ellipsoids in grey matter (plateau and edge), 0/1.
        Defined by geometry, so it is the same whatever ``auditory_psc`` is.
    dmn_mask_img : Nifti1Image
        Union of the Default Mode hubs in grey matter (plateau and edge), 0/1;
        present even when ``dmn_psc == 0`` (then nothing is planted in it).
    dmn_labels_img : Nifti1Image
        Integer label per hub (0 = none), keys of ``dmn_regions``.
    dmn_regions : dict
        Label -> region name.
    brain_mask_img : Nifti1Image
        MNI152 brain mask at 3 mm (the analysis mask), 0/1.
    edge_mask_img : Nifti1Image or None
        Voxels where a planted effect tapers (``0 < |effect| < |psc|``); they
        count neither for sensitivity nor as false discoveries. ``None`` when
        ``edge_fraction == 0``.
    """

    effect_img: nib.Nifti1Image
    auditory_mask_img: nib.Nifti1Image
    dmn_mask_img: nib.Nifti1Image
    dmn_labels_img: nib.Nifti1Image
    dmn_regions: dict
    brain_mask_img: nib.Nifti1Image
    edge_mask_img: nib.Nifti1Image | None = None


@dataclass(frozen=True)
class SimulatedRun:
    """A simulated run, ready for the GLM, plus its ground truth.

    Attributes
    ----------
    bold_img : Nifti1Image
        4D float32 BOLD series on the MNI152 3 mm grid.
    events : DataFrame
        ``onset``, ``duration``, ``trial_type``.
    t_r : float
        Repetition time (s).
    mask_img : Nifti1Image
        Brain mask to analyse with (same as ``truth.brain_mask_img``).
    anat_img : Nifti1Image
        The MNI152 T1 template at 3 mm, standing in for an anatomical image.
    truth : GroundTruth
    params : SimulationParams
    """

    bold_img: nib.Nifti1Image
    events: pd.DataFrame
    t_r: float
    mask_img: nib.Nifti1Image
    anat_img: nib.Nifti1Image
    truth: GroundTruth
    params: SimulationParams


# --------------------------------------------------------------------------- templates

@lru_cache(maxsize=1)
def _t1_template():
    """The MNI152 T1 template on the 3 mm grid (the simulated run's anatomical image)."""
    from nilearn import datasets

    return datasets.load_mni152_template(resolution=_RESOLUTION_MM)


def _templates():
    """MNI152 3 mm T1, brain mask, GM/WM probabilities (read-only arrays) and affine."""
    from nilearn import datasets

    t1_img = _t1_template()
    mask = datasets.load_mni152_brain_mask(resolution=_RESOLUTION_MM).get_fdata() > 0
    gm = datasets.load_mni152_gm_template(resolution=_RESOLUTION_MM).get_fdata().astype(np.float32)
    wm = datasets.load_mni152_wm_template(resolution=_RESOLUTION_MM).get_fdata().astype(np.float32)
    for array in (mask, gm, wm):
        array.flags.writeable = False
    return t1_img, mask, gm, wm, t1_img.affine.copy()


def _img(data, affine, dtype):
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    img.header.set_xyzt_units("mm", "sec")
    return img


# --------------------------------------------------------------------------- pieces

def _listening_regressor(params: SimulationParams) -> np.ndarray:
    """HRF-convolved block regressor at the scan times, 1 = sustained plateau."""
    from nilearn.glm.first_level import compute_regressor

    events = listening_events(params.t_r, params.n_scans)
    frame_times = np.arange(params.n_scans) * params.t_r
    condition = np.vstack([events.onset, events.duration, np.ones(len(events))])
    regressor = compute_regressor(condition, "spm", frame_times, oversampling=50)[0][:, 0]
    # Response to one block lasting far longer than the HRF, sampled late in it.
    long_times = np.arange(0.0, 200.0, params.t_r)
    sustained = compute_regressor(np.array([[0.0], [1000.0], [1.0]]), "spm", long_times,
                                  oversampling=50)[0][-1, 0]
    return regressor / sustained


def _ellipsoid_radius(shape, affine, centre, semi_axes) -> np.ndarray:
    """Normalised ellipsoid radius (1 = surface) of every voxel centre."""
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    xyz = affine[:3, :3] @ ijk + affine[:3, 3:4]
    scaled = (xyz - np.asarray(centre, dtype=np.float32)[:, None]) / np.asarray(semi_axes, np.float32)[:, None]
    return np.sqrt((scaled ** 2).sum(axis=0)).reshape(shape)


def _profile(radius: np.ndarray, edge_fraction: float) -> np.ndarray:
    """1 on the plateau (r <= 1 - edge), cosine taper to 0 at r = 1, 0 outside."""
    profile = (radius <= 1.0).astype(np.float32)
    if edge_fraction > 0:
        inner = 1.0 - edge_fraction
        band = (radius > inner) & (radius <= 1.0)
        profile[band] = 0.5 * (1.0 + np.cos(np.pi * (radius[band] - inner) / edge_fraction))
    return profile


def _regions(params: SimulationParams, shape, affine, eligible):
    """Per-region profiles restricted to ``eligible`` voxels, in order."""
    out = []
    for name, centre, semi_axes in params.auditory_regions + params.dmn_regions:
        radius = _ellipsoid_radius(shape, affine, centre, semi_axes)
        profile = _profile(radius, params.edge_fraction) * eligible
        out.append((name, profile))
    return out


def _smooth_field(rng, shape, sigma_vox, mask) -> np.ndarray:
    """Gaussian random field, zero mean and unit sd inside ``mask``."""
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_vox)
    values = field_[mask]
    return (field_ - values.mean()) / values.std()


def _drift_basis(n_scans: int, t_r: float, n_cosines: int) -> np.ndarray:
    """Linear trend and cosines below 0.01 Hz, each with zero mean and unit sd over time."""
    t = np.arange(n_scans, dtype=np.float64)
    columns = [t - t.mean()]
    columns += [np.cos(np.pi * k * (t + 0.5) / n_scans) for k in range(1, n_cosines + 1)
                if k / (2.0 * n_scans * t_r) < _HIGH_PASS_HZ]
    basis = np.stack(columns, axis=1)
    return basis / basis.std(axis=0)


# --------------------------------------------------------------------------- simulate

def simulate_run(params: SimulationParams | None = None, **overrides) -> SimulatedRun:
    """Generate a listen-vs-rest run with planted auditory and DMN effects.

    Parameters
    ----------
    params : SimulationParams, optional
        Defaults to ``SimulationParams()``.
    **overrides
        Fields of :class:`SimulationParams` to change, e.g. ``seed=1, dmn_psc=0``.

    Returns
    -------
    SimulatedRun
        BOLD image, events, mask, stand-in anatomical image and ground truth.

    Examples
    --------
    >>> run = simulate_run(seed=1, n_scans=10, dmn_psc=0.0)
    >>> float(abs(run.truth.effect_img.get_fdata()[run.truth.dmn_mask_img.get_fdata() > 0]).max())
    0.0
    """
    params = replace(params or SimulationParams(), **overrides)
    t1_img, mask, gm, wm, affine = _templates()
    shape = mask.shape
    rng = np.random.default_rng(params.seed)
    n_scans = params.n_scans

    # Tissue fractions and EPI-like baseline.
    gm_m = np.where(mask, gm, 0.0).astype(np.float32)
    wm_m = np.where(mask, wm, 0.0).astype(np.float32)
    csf_m = np.where(mask, np.clip(1.0 - gm_m - wm_m, 0.0, 1.0), 0.0).astype(np.float32)
    total = np.maximum(gm_m + wm_m + csf_m, 1e-6)
    fractions = [gm_m / total, wm_m / total, csf_m / total]
    baseline = sum(f * _TISSUE_BASELINE[k] for f, k in zip(fractions, ("gm", "wm", "csf")))
    bias = 1.0 + params.bias_field * np.tanh(_smooth_field(rng, shape, 8.0, mask) / 2.0)
    baseline = np.where(mask, baseline * bias, 0.0).astype(np.float32)
    inv_tsnr = (fractions[0] / params.tsnr_gm + fractions[1] / params.tsnr_wm
                + fractions[2] / params.tsnr_csf)
    noise_sd = (baseline * inv_tsnr).astype(np.float32)

    # Planted effects (geometry does not depend on the psc values).
    eligible = mask & (gm >= params.gm_threshold)
    profiles = _regions(params, shape, affine, eligible)
    n_aud = len(params.auditory_regions)
    auditory_mask = np.zeros(shape, bool)
    effect = np.zeros(shape, np.float32)
    dmn_labels = np.zeros(shape, np.int16)
    dmn_names = {}
    for index, (name, profile) in enumerate(profiles):
        if index < n_aud:
            auditory_mask |= profile > 0
            psc = params.auditory_psc
        else:
            label = index - n_aud + 1
            dmn_labels[(profile > 0) & (dmn_labels == 0)] = label
            dmn_names[label] = name
            psc = params.dmn_psc
        # Where regions overlap the larger profile wins (regions are disjoint by default).
        stronger = profile * psc
        effect = np.where(np.abs(stronger) > np.abs(effect), stronger, effect).astype(np.float32)
    dmn_mask = dmn_labels > 0
    if params.edge_fraction > 0:
        plateau = np.zeros(shape, bool)
        for name, profile in profiles:
            plateau |= profile >= 1.0
        edge = (effect != 0) & ~plateau
    else:
        edge = None

    # Time courses, on brain voxels only.
    regressor = _listening_regressor(params).astype(np.float32)
    vox_base = baseline[mask]
    vox_sd = noise_sd[mask]
    signal = vox_base[:, None] * (effect[mask][:, None] / 100.0) * regressor[None, :]

    basis = _drift_basis(n_scans, params.t_r, params.n_drift_cosines).astype(np.float32)
    if params.drift_amplitude > 0:
        n_basis = basis.shape[1]
        weights = np.stack([
            (rng.standard_normal() + _smooth_field(rng, shape, 6.0, mask)[mask]) / math.sqrt(2 * n_basis)
            for _ in range(n_basis)], axis=1).astype(np.float32)
        drift = (weights @ basis.T) * (params.drift_amplitude / 100.0) * vox_base[:, None]
    else:
        drift = 0.0

    noise = np.empty((vox_base.size, n_scans), np.float32)
    sigma_vox = params.noise_fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0))) / _RESOLUTION_MM
    if sigma_vox > 0:
        delta = np.zeros((9, 9, 9), np.float32)
        delta[4, 4, 4] = 1.0
        gain = float(np.sqrt((ndimage.gaussian_filter(delta, sigma_vox) ** 2).sum()))
    innovation_scale = math.sqrt(1.0 - params.rho ** 2)
    previous = None
    for t in range(n_scans):
        white = rng.standard_normal(shape, dtype=np.float32)
        if sigma_vox > 0:
            white = ndimage.gaussian_filter(white, sigma_vox) / gain
        white = white[mask]
        previous = white if previous is None else params.rho * previous + innovation_scale * white
        noise[:, t] = previous
    noise *= vox_sd[:, None]

    series = vox_base[:, None] + signal + drift + noise
    bold = np.zeros(shape + (n_scans,), np.float32)
    bold[mask] = series
    bold_img = _img(bold, affine, np.float32)
    bold_img.header.set_zooms((_RESOLUTION_MM,) * 3 + (float(params.t_r),))

    truth = GroundTruth(
        effect_img=_img(effect, affine, np.float32),
        auditory_mask_img=_img(auditory_mask, affine, np.uint8),
        dmn_mask_img=_img(dmn_mask, affine, np.uint8),
        dmn_labels_img=_img(dmn_labels, affine, np.int16),
        dmn_regions=dmn_names,
        brain_mask_img=_img(mask, affine, np.uint8),
        edge_mask_img=None if edge is None else _img(edge, affine, np.uint8),
    )
    return SimulatedRun(bold_img=bold_img, events=listening_events(params.t_r, n_scans),
                        t_r=float(params.t_r), mask_img=truth.brain_mask_img, anat_img=t1_img,
                        truth=truth, params=params)


# --------------------------------------------------------------------------- disk

def save_simulated(run: SimulatedRun, out_dir) -> dict[str, Path]:
    """Write the run and its ground truth to ``out_dir``, atomically.

    Files are written to a temporary sibling folder that is then renamed into
    place, so readers never see a half-written dataset. An existing
    ``out_dir`` is replaced.

    Parameters
    ----------
    run : SimulatedRun
    out_dir : str or Path

    Returns
    -------
    dict
        File key -> final path: ``bold``, ``events``, ``truth_effect``,
        ``truth_auditory_mask``, ``truth_dmn_mask``, ``truth_dmn_labels``,
        ``truth_brain_mask``, ``truth_edge_mask`` (only if there is an edge band), ``anat`` (the
        MNI152 T1 template on the run's grid) and ``params``.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    truth = run.truth
    images = {
        "bold": run.bold_img,
        "truth_effect": truth.effect_img,
        "truth_auditory_mask": truth.auditory_mask_img,
        "truth_dmn_mask": truth.dmn_mask_img,
        "truth_dmn_labels": truth.dmn_labels_img,
        "truth_brain_mask": truth.brain_mask_img,
    }
    if truth.edge_mask_img is not None:
        images["truth_edge_mask"] = truth.edge_mask_img
    if run.anat_img is not None:  # saved (as float32, not the template's uint8) so loading need not resample it
        anat = nib.Nifti1Image(np.asarray(run.anat_img.get_fdata(), dtype=np.float32), run.anat_img.affine)
        anat.set_data_dtype(np.float32)
        images["anat"] = anat
    try:
        for key, img in images.items():
            nib.save(img, tmp / _FILES[key])
        run.events.to_csv(tmp / _FILES["events"], sep="\t", index=False)
        meta = {
            "format_version": FORMAT_VERSION,
            "generator": "analysis.simulate",
            "t_r": run.t_r,
            "space": "MNI152 (nilearn bundled template), 3 mm",
            "params": serial.to_data(run.params),
            "dmn_regions": {str(k): v for k, v in truth.dmn_regions.items()},
            "files": {key: _FILES[key] for key in [*images, "events", "params"]},
        }
        (tmp / _FILES["params"]).write_text(json.dumps(meta, indent=2) + "\n")
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {key: out_dir / name for key, name in meta["files"].items()}


def _replace_dir(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; an existing ``dst`` is moved aside first, then removed."""
    try:
        os.rename(src, dst)
        return
    except OSError:
        if not dst.exists():
            raise
    old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
    os.rename(dst, old / dst.name)
    os.rename(src, dst)
    shutil.rmtree(old, ignore_errors=True)


def load_simulated(out_dir) -> SimulatedRun:
    """Read a run written by :func:`save_simulated`.

    Parameters
    ----------
    out_dir : str or Path

    Returns
    -------
    SimulatedRun
        Images are loaded into memory; ``anat_img`` is the bundled MNI152 template (on the run's grid).

    Raises
    ------
    FileNotFoundError
        When a file is missing.
    ValueError
        When ``params.json`` has an unknown format version.
    """
    out_dir = Path(out_dir)
    params_path = out_dir / _FILES["params"]
    if not params_path.exists():
        raise FileNotFoundError(f"{params_path}: not a simulated dataset folder (no params.json)")
    meta = json.loads(params_path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{params_path}: format_version {meta.get('format_version')!r}, "
                         f"expected {FORMAT_VERSION}; regenerate the dataset")
    params = serial.from_data(SimulationParams, meta["params"])  # unknown keys raise

    def read(key, dtype):
        path = out_dir / _FILES[key]
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing from the simulated dataset; regenerate it")
        img = nib.load(path)
        out = nib.Nifti1Image(np.asarray(img.dataobj, dtype=dtype), img.affine, img.header)
        out.set_data_dtype(dtype)
        return out

    edge_img = read("truth_edge_mask", np.uint8) if "truth_edge_mask" in meta["files"] else None
    truth = GroundTruth(
        effect_img=read("truth_effect", np.float32),
        auditory_mask_img=read("truth_auditory_mask", np.uint8),
        dmn_mask_img=read("truth_dmn_mask", np.uint8),
        dmn_labels_img=read("truth_dmn_labels", np.int16),
        dmn_regions={int(k): v for k, v in meta["dmn_regions"].items()},
        brain_mask_img=read("truth_brain_mask", np.uint8),
        edge_mask_img=edge_img,
    )
    events_path = out_dir / _FILES["events"]
    if not events_path.exists():
        raise FileNotFoundError(f"{events_path}: missing from the simulated dataset; regenerate it")
    events = pd.read_csv(events_path, sep="\t", dtype={"onset": float, "duration": float, "trial_type": str})
    anat_img = read("anat", np.float32) if "anat" in meta["files"] else _t1_template()  # older folders: rebuild
    return SimulatedRun(bold_img=read("bold", np.float32), events=events, t_r=float(meta["t_r"]),
                        mask_img=truth.brain_mask_img, anat_img=anat_img, truth=truth,
                        params=params)


# --------------------------------------------------------------------------- scoring

def recovery(z_thresholded_img, truth: GroundTruth) -> dict:
    """Score a thresholded statistical map against the ground truth.

    A suprathreshold voxel is any non-zero voxel of ``z_thresholded_img``
    inside the brain mask. It is *false* when no effect of its sign was
    planted there (positive z where ``effect <= 0``, negative z where
    ``effect >= 0``). Voxels of the edge band count for nothing.

    Parameters
    ----------
    z_thresholded_img : Nifti1Image
        Thresholded map (zero below threshold), e.g. the first output of
        :func:`nilearn.glm.threshold_stats_img`, on the grid of ``truth``.
    truth : GroundTruth

    Returns
    -------
    dict
        ``sensitivity``: fraction of the auditory plateau (positive effect,
        outside the edge band) that is positive and suprathreshold;
        ``fdp``: false / all suprathreshold voxels outside the edge band (0 when
        none); ``n_true_positive``, ``n_auditory`` (plateau voxels),
        ``n_suprathreshold``, ``n_false_positive``, ``n_edge_excluded``,
        ``dmn_sensitivity`` (fraction of the negative DMN plateau that is
        negative and suprathreshold; ``nan`` when no deactivation was planted),
        ``n_dmn_detected``.

    Examples
    --------
    >>> run = simulate_run(n_scans=8)
    >>> recovery(run.truth.effect_img, run.truth)["sensitivity"]
    1.0
    """
    z = np.asarray(nib.load(z_thresholded_img).dataobj if isinstance(z_thresholded_img, (str, Path))
                   else z_thresholded_img.get_fdata(), dtype=np.float64)
    effect = truth.effect_img.get_fdata()
    if z.shape != effect.shape:
        raise ValueError(f"z map shape {z.shape} differs from the ground truth {effect.shape}; "
                         "resample it to the simulated grid")
    brain = truth.brain_mask_img.get_fdata() > 0
    edge = (truth.edge_mask_img.get_fdata() > 0) if truth.edge_mask_img is not None else np.zeros_like(brain)
    scored = brain & ~edge
    supra = scored & (z != 0) & np.isfinite(z)
    false = supra & (((z > 0) & (effect <= 0)) | ((z < 0) & (effect >= 0)))

    auditory = scored & (truth.auditory_mask_img.get_fdata() > 0) & (effect > 0)
    true_pos = auditory & supra & (z > 0)
    dmn = scored & (truth.dmn_mask_img.get_fdata() > 0) & (effect < 0)
    dmn_hit = dmn & supra & (z < 0)

    n_supra = int(supra.sum())
    n_aud = int(auditory.sum())
    return {
        "sensitivity": float(true_pos.sum() / n_aud) if n_aud else float("nan"),
        "fdp": float(false.sum() / n_supra) if n_supra else 0.0,
        "n_true_positive": int(true_pos.sum()),
        "n_auditory": n_aud,
        "n_suprathreshold": n_supra,
        "n_false_positive": int(false.sum()),
        "n_edge_excluded": int((brain & edge & (z != 0)).sum()),
        "dmn_sensitivity": float(dmn_hit.sum() / dmn.sum()) if dmn.any() else float("nan"),
        "n_dmn_detected": int(dmn_hit.sum()),
    }
