"""The Default Mode Network (DMN): definitions, ROI-level GLM, overlap and a seed-based map.

Three views of the network [@raichle2001]:

* the main map: the Default network (network 7) of the 7-network parcellation of
  @yeo2011 (``fetch_atlas_yeo_2011``, "thick" = liberal cortical mask);
* nodes: the 67 "DefaultMode" ROIs of @seitzman2020 (``fetch_coords_seitzman_2018``),
  as spheres (default radius 6 mm); its 12 "Auditory" ROIs are the positive control;
* the parcels of the 400-parcel, 7-network @schaefer2018 atlas whose label contains
  "Default".

The ROI-level GLM averages the voxels of each ROI (sphere or mask, restricted to the brain
mask), scales the mean time series to percent signal change (as nilearn's
``signal_scaling=0``), fits the given design matrix with :func:`nilearn.glm.first_level.run_glm`
(or the project's calibrated AR(1) models, :mod:`analysis.noise`) and evaluates the contrast
with :func:`nilearn.glm.compute_contrast`. p-values are two-sided; across nodes they are
FDR-corrected with the Benjamini-Hochberg procedure [@benjamini1995].

Atlases exist only in MNI space: for data in another space :func:`analyse_dmn` returns a
result with ``applicable=False`` and the reason, and computes nothing.

Examples
--------
>>> result, images = analyse_dmn(bold_img, design, z_img, -3.1, mask_img, contrast="listening",
...                              noise_model="ar1")  # doctest: +SKIP
>>> result.deactivated, result.network.p  # doctest: +SKIP
(True, 0.0004)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
import pandas as pd

from . import atlas as _atlas
from .atlas import AtlasStatus, LoadedAtlas, fetch_atlas, is_mni
from .config import SEITZMAN_NETWORKS
from .serial import JSON_CONFIG, Table
from .noise import _blas_limited

__all__ = ["PCC_SEED", "DEFAULT_NODE_RADIUS", "DMN_NETWORK", "CONTROL_NETWORK", "SEITZMAN_NETWORKS", "ROI_COLUMNS",
           "DMNDefinitions", "NetworkTest", "DMNOverlap", "SeedSummary", "DMNResult",
           "dmn_definitions", "roi_timeseries", "roi_glm", "network_test", "dmn_overlap", "thresholded_overlap",
           "overlaps_by_threshold", "seed_map",
           "analyse_dmn"]

PCC_SEED = (0.0, -53.0, 26.0)  # posterior cingulate, as in nilearn's plot_adhd_dmn example
DEFAULT_NODE_RADIUS = 6.0  # mm
DMN_NETWORK = "DefaultMode"  # Seitzman network names
CONTROL_NETWORK = "Auditory"  # the positive control when the task is known to be auditory

YEO_DEFAULT = 7
ROI_COLUMNS = ["ROI", "Network", "X", "Y", "Z", "Label", "Label distance (mm)", "Voxels", "Effect", "SE", "CI Low", "CI High", "t",
               "dof", "z", "p", "q", "Unit"]


# --------------------------------------------------------------------------------------------
# definitions
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DMNDefinitions:
    """The DMN and the auditory control as images and coordinates (an input object, not stored).

    ``network_img`` is the Yeo Default network mask (None when Yeo could not be loaded),
    ``schaefer_img`` the mask of Schaefer's Default parcels (or None), ``nodes`` and ``control``
    the Seitzman DefaultMode / Auditory ROIs (columns ``ROI``, ``Network``, ``X``, ``Y``, ``Z``,
    ``Region``), ``statuses`` how each atlas fetch ended.
    """

    network_img: nib.Nifti1Image | None
    schaefer_img: nib.Nifti1Image | None
    nodes: pd.DataFrame
    control: pd.DataFrame
    node_radius: float
    n_schaefer_parcels: int
    statuses: dict[str, AtlasStatus]
    network_source: str
    control_name: str | None = None  # the Seitzman network of ``control`` (None: no positive control)

    @property
    def main_img(self) -> nib.Nifti1Image | None:
        """The map used for the network-level test: Yeo, else Schaefer's Default parcels."""
        return self.network_img if self.network_img is not None else self.schaefer_img


def _seitzman_table(bunch, network: str, prefix: str) -> pd.DataFrame:
    rois = bunch["rois"]
    nets = np.asarray(bunch["networks"]).astype(str)
    regions = np.asarray(bunch["regions"]).astype(str)
    keep = nets == network
    xyz = np.asarray(rois[["x", "y", "z"]], dtype=float)[keep]
    return pd.DataFrame({"ROI": [f"{prefix}{i + 1:02d}" for i in range(int(keep.sum()))],
                         "Network": network, "X": xyz[:, 0], "Y": xyz[:, 1], "Z": xyz[:, 2],
                         "Region": regions[keep]})


def dmn_definitions(data_dir=None, *, node_radius: float = DEFAULT_NODE_RADIUS, thickness: str = "thick",
                    atlases: Mapping[str, LoadedAtlas] | None = None, control_network: str | None = CONTROL_NETWORK,
                    **fetch_kwargs) -> DMNDefinitions:
    """Load the three views of the DMN and the positive-control network; never raises for a missing atlas.

    Parameters
    ----------
    data_dir : path or None
        nilearn's ``data_dir`` (None honours ``NILEARN_DATA``).
    node_radius : float
        Radius (mm) of the spheres around the Seitzman coordinates.
    thickness : {"thick", "thin"}
        Which Yeo 2011 cortical mask (nilearn's ``thickness``).
    atlases : mapping, optional
        Already fetched atlases (keys ``"yeo_2011"`` / ``"yeo_2011_thin"``, ``"schaefer_2018"``,
        ``"seitzman_2018"``).
    control_network : str or None
        The Seitzman network used as positive control (one of :data:`SEITZMAN_NETWORKS`, not
        ``"DefaultMode"``), or None for no control.
    **fetch_kwargs
        Passed to :func:`analysis.atlas.fetch_atlas` (``download``, ``budget``...).
    """
    if control_network is not None and control_network not in SEITZMAN_NETWORKS:
        raise ValueError(f"control_network = {control_network!r}; choose one of {', '.join(SEITZMAN_NETWORKS)} "
                         "or None")
    if control_network == DMN_NETWORK:
        raise ValueError("the DMN cannot be its own positive control; choose another network or None")
    atlases = dict(atlases or {})
    yeo_key = "yeo_2011" if thickness == "thick" else "yeo_2011_thin"
    for key in (yeo_key, "schaefer_2018", "seitzman_2018"):
        if key not in atlases:
            atlases[key] = fetch_atlas(key, data_dir, **fetch_kwargs)
    yeo, sch, sz = atlases[yeo_key], atlases["schaefer_2018"], atlases["seitzman_2018"]
    network_img = None
    if yeo.available:
        img = yeo.maps_img
        data = np.rint(np.asarray(img.dataobj)).astype(np.int16)
        data = data.reshape(data.shape[:3])
        network_img = nib.Nifti1Image((data == YEO_DEFAULT).astype(np.uint8), img.affine)
    schaefer_img, n_parcels = None, 0
    if sch.available:
        img = sch.maps_img
        labels = sch.labels
        idx = [i for i, lab in enumerate(labels) if "Default" in lab]
        data = np.rint(np.asarray(img.dataobj)).astype(np.int32)
        schaefer_img = nib.Nifti1Image(np.isin(data, idx).astype(np.uint8), img.affine)
        n_parcels = len(idx)
    if sz.available:
        nodes = _seitzman_table(sz.bunch, DMN_NETWORK, "DMN")
        control = (_seitzman_table(sz.bunch, control_network, control_network[:3].upper()) if control_network
                   else pd.DataFrame(columns=["ROI", "Network", "X", "Y", "Z", "Region"]))
    else:
        nodes = pd.DataFrame(columns=["ROI", "Network", "X", "Y", "Z", "Region"])
        control = nodes.copy()
    if network_img is not None:
        source = f"Yeo 2011 7-network atlas ({thickness}), network 7 (Default)"
    elif schaefer_img is not None:
        source = "Schaefer 2018 400-parcel atlas, Default parcels (Yeo 2011 unavailable)"
    else:
        source = "none (no network atlas could be loaded)"
    statuses = {k: v.status for k, v in atlases.items()}
    return DMNDefinitions(network_img=network_img, schaefer_img=schaefer_img, nodes=nodes, control=control,
                          node_radius=float(node_radius), n_schaefer_parcels=n_parcels, statuses=statuses,
                          network_source=source, control_name=control_network if sz.available else None)


# --------------------------------------------------------------------------------------------
# ROI time series and GLM
# --------------------------------------------------------------------------------------------

class _Bold:
    """The in-mask data (float32), with world coordinates of the in-mask voxels.

    From the run's one voxel-by-time matrix (:class:`analysis.data.BoldMatrix`; nothing is read or masked again)
    or, for a 4D image, read once here.
    """

    def __init__(self, bold_img, mask_img=None):
        self.source = bold_img
        if hasattr(bold_img, "mask_report"):  # the run's BoldMatrix: its mask is the analysis mask
            self.img = bold_img.mask_img
            mask = bold_img.mask
            if mask_img is not None and not np.array_equal(_resample_mask(mask_img, self.img), mask):
                raise ValueError("mask_img differs from the mask of the data matrix")
            self.Yv = bold_img.data  # (n_voxels, n_scans), read-only
        else:
            self.img = bold_img
            data = np.asarray(bold_img.dataobj, dtype=np.float32)
            if mask_img is not None:
                mask = _resample_mask(mask_img, bold_img)
            else:
                mask = np.all(np.isfinite(data), axis=3) & (data.std(axis=3) > 0)
            self.Yv = data[mask]
            del data
        self.affine = self.img.affine
        self.shape = self.img.shape[:3]
        self.mask = mask
        self.ijk = np.argwhere(mask)
        self.xyz = nib.affines.apply_affine(self.affine, self.ijk)
        self._tree = None

    @property
    def Y(self) -> np.ndarray:
        """(n_scans, n_voxels) view of the data."""
        return self.Yv.T

    def series(self, idx: np.ndarray) -> np.ndarray:
        """(n_scans, len(idx)) float64 time series of the in-mask voxels ``idx``, as read."""
        if hasattr(self.source, "raw_series"):
            return self.source.raw_series(idx)
        return np.ascontiguousarray(self.Yv[idx].T, dtype=np.float64)

    def image(self):
        """The 4D image of the data (built from the matrix only when a caller needs an image)."""
        if hasattr(self.source, "mask_report"):
            return self.source.unmask(self.source.raw_series(np.arange(self.Yv.shape[0])).T.astype(np.float32))
        return self.source

    def sphere(self, center, radius: float) -> np.ndarray:
        """Column indices (increasing) of the in-mask voxels within ``radius`` mm of ``center``.

        The same voxels, and so the same signals, as nilearn's ``NiftiSpheresMasker`` (to float32 rounding:
        ``tests/test_dmn.py``), which is not used because it needs a 4D image (this works on the run's voxel
        matrix), reads it again for every set of spheres (about 40 times slower here), raises on an empty
        sphere (a node outside the field of view is reported with 0 voxels) and returns no voxel counts.
        """
        if self._tree is None:  # candidates from a k-d tree, then the exact test on those only
            from scipy.spatial import cKDTree

            self._tree = cKDTree(self.xyz)
        center = np.asarray(center, dtype=float)
        near = np.sort(np.asarray(self._tree.query_ball_point(center, radius + 1e-3), dtype=np.intp))
        d2 = np.sum((self.xyz[near] - center) ** 2, axis=1)
        return near[d2 <= radius ** 2 + 1e-6]

    def in_mask(self, roi_img) -> np.ndarray:
        """Column indices of the in-mask voxels inside a ROI mask image."""
        roi = _resample_mask(roi_img, self.img)
        return np.flatnonzero(roi[tuple(self.ijk.T)])


def _resample_mask(mask_img, target_img) -> np.ndarray:
    """Boolean array of ``mask_img`` on ``target_img``'s 3D grid (nearest neighbour)."""
    from nilearn.image import resample_to_img

    shape = target_img.shape[:3]
    data = np.asarray(mask_img.dataobj)
    if mask_img.shape[:3] == shape and np.allclose(mask_img.affine, target_img.affine):
        return data.reshape(shape) > 0
    target = nib.Nifti1Image(np.zeros(shape, dtype=np.uint8), target_img.affine)
    src = nib.Nifti1Image((data.reshape(mask_img.shape[:3]) > 0).astype(np.uint8), mask_img.affine)
    out = resample_to_img(src, target, interpolation="nearest", force_resample=True, copy_header=True)
    return np.asarray(out.dataobj) > 0


def _roi_columns(bold: _Bold, rois, radius: float) -> tuple[list[str], list[np.ndarray]]:
    if isinstance(rois, pd.DataFrame):
        names = (rois["ROI"] if "ROI" in rois else pd.Series([f"ROI{i + 1}" for i in range(len(rois))]))
        radii = rois["Radius"] if "Radius" in rois else pd.Series(radius, index=rois.index)
        idx = [bold.sphere(row[["X", "Y", "Z"]].to_numpy(dtype=float), float(r))
               for (_, row), r in zip(rois.iterrows(), radii)]
        return [str(n) for n in names], idx
    if isinstance(rois, Mapping):
        return [str(k) for k in rois], [bold.in_mask(v) for v in rois.values()]
    raise TypeError("rois must be a DataFrame of coordinates (X, Y, Z) or a mapping {name: mask image}")


def _mean_series(bold: _Bold, idx: np.ndarray, scale: bool) -> tuple[np.ndarray, str]:
    if idx.size == 0:
        return np.full(bold.Y.shape[0], np.nan), ""
    y = bold.series(idx).mean(axis=1)
    mean = y.mean()
    if scale and mean > 0:
        return 100.0 * (y / mean - 1.0), "% signal change"
    return y - mean, "signal units"


def roi_timeseries(bold_img, rois, mask_img=None, *, radius: float = DEFAULT_NODE_RADIUS,
                   scale: bool = True) -> pd.DataFrame:
    """Mean time series of each ROI, in percent signal change.

    Parameters
    ----------
    bold_img : Nifti1Image
        4D run.
    rois : DataFrame or mapping
        Coordinates (columns ``X``, ``Y``, ``Z``, optional ``ROI`` names and ``Radius``) for
        spheres, or ``{name: mask image}``.
    mask_img : Nifti1Image, optional
        Brain mask; ROI voxels outside it are ignored.
    radius : float
        Sphere radius (mm) when ``rois`` has no ``Radius`` column.
    scale : bool
        Scale to percent of the mean (as nilearn's ``signal_scaling=0``); otherwise demean.

    Returns
    -------
    DataFrame
        Shape (n_scans, n_rois); ``attrs["voxels"]`` holds the voxel count of each ROI.
    """
    bold = _Bold(bold_img, mask_img)
    names, idx = _roi_columns(bold, rois, radius)
    cols = {n: _mean_series(bold, i, scale)[0] for n, i in zip(names, idx)}
    out = pd.DataFrame(cols)
    out.attrs["voxels"] = {n: int(i.size) for n, i in zip(names, idx)}
    return out


def _contrast_vector(contrast, design_matrix: pd.DataFrame) -> np.ndarray:
    if isinstance(contrast, str):
        from .contrasts import contrast_vector  # our parser: nothing is evaluated

        return contrast_vector(contrast, list(design_matrix.columns))
    vec = np.asarray(contrast, dtype=float).ravel()
    if vec.size != design_matrix.shape[1]:
        raise ValueError(f"contrast has {vec.size} weights for {design_matrix.shape[1]} design columns")
    return vec


def _fit_contrast(Y: np.ndarray, X: np.ndarray, con: np.ndarray, noise_model: str) -> dict[str, np.ndarray]:
    """Fit ``Y`` (n_scans, n) on ``X`` and evaluate a t contrast; two-sided p-values."""
    from nilearn.glm import compute_contrast
    from nilearn.glm.first_level import run_glm
    from scipy import stats

    if noise_model in ("ols", "ar1"):
        labels, results = run_glm(Y, X, noise_model=noise_model, bins=100, n_jobs=1)
    else:
        from .noise import fit_noise_model

        labels, results, _ = fit_noise_model(Y, X, noise_model, mask_img=None, rho_fwhm=None)
    c = compute_contrast(labels, results, con, stat_type="t")
    effect = np.asarray(c.effect_size(), dtype=float).ravel()
    se = np.sqrt(np.asarray(c.effect_variance(), dtype=float).ravel())
    t = np.asarray(c.stat(), dtype=float).ravel()
    dof = float(c.dof)
    p = 2.0 * stats.t.sf(np.abs(t), dof)
    z = np.sign(t) * stats.norm.isf(p / 2.0)
    half = stats.t.ppf(0.975, dof) * se
    return dict(effect=effect, se=se, t=t, dof=np.full(t.shape, dof), p=p, z=z, lo=effect - half,
                hi=effect + half)


def _glm_table(bold: _Bold, design_matrix: pd.DataFrame, names, idx, contrast, noise_model: str,
               scale: bool = True) -> pd.DataFrame:
    con = _contrast_vector(contrast, design_matrix)
    X = design_matrix.to_numpy(dtype=float)
    series, units = zip(*(_mean_series(bold, i, scale) for i in idx)) if idx else ((), ())
    rows = pd.DataFrame({"ROI": list(names), "Voxels": [int(i.size) for i in idx], "Unit": list(units)})
    for col in ("Effect", "SE", "CI Low", "CI High", "t", "dof", "z", "p"):
        rows[col] = np.nan
    ok = np.array([i.size > 0 for i in idx], dtype=bool)
    if ok.any():
        Y = np.column_stack([s for s, good in zip(series, ok) if good])
        r = _fit_contrast(Y, X, con, noise_model)
        for col, key in (("Effect", "effect"), ("SE", "se"), ("CI Low", "lo"), ("CI High", "hi"), ("t", "t"),
                         ("dof", "dof"), ("z", "z"), ("p", "p")):
            rows.loc[ok, col] = r[key]
    return rows


def _bh(p: pd.Series) -> np.ndarray:
    from scipy import stats

    q = np.full(len(p), np.nan)
    finite = np.isfinite(p.to_numpy(dtype=float))
    if finite.any():
        q[finite] = stats.false_discovery_control(p.to_numpy(dtype=float)[finite], method="bh")
    return q


@_blas_limited
def roi_glm(bold_img, design_matrix: pd.DataFrame, rois, contrast, noise_model: str = "ar1", *,
            mask_img=None, radius: float = DEFAULT_NODE_RADIUS, scale: bool = True) -> pd.DataFrame:
    """ROI-level GLM: the mean time series of each ROI fitted with the design matrix.

    Parameters
    ----------
    bold_img : Nifti1Image
        4D run (n_scans = rows of ``design_matrix``).
    design_matrix : DataFrame
        One row per scan, as for ``FirstLevelModel(design_matrices=...)``.
    rois : DataFrame or mapping
        Sphere centres (``X``, ``Y``, ``Z``; optional ``ROI``, ``Network``, ``Radius``, ``Label``)
        or ``{name: mask image}``.
    contrast : str or array
        A contrast expression over the design columns (``"listening"``) or a weight vector.
    noise_model : str
        ``"ols"`` or ``"ar1"`` (nilearn's :func:`~nilearn.glm.first_level.run_glm`), or a calibrated
        model of :mod:`analysis.noise` (``"ar1_bc"``, ``"ar1_pooled"``).
    mask_img : Nifti1Image, optional
        Brain mask; ROI voxels outside it are ignored.
    radius : float
        Sphere radius in mm.
    scale : bool
        Percent signal change (True) or raw units.

    Returns
    -------
    DataFrame
        :data:`ROI_COLUMNS`: ``Effect`` (in ``Unit``, % signal change when scaled), ``SE``, the 95 %
        confidence interval, ``t`` with ``dof``, ``z``, two-sided ``p`` and Benjamini-Hochberg ``q``
        across the rows. ROIs with no voxel in the mask get NaN statistics.
    """
    bold = _Bold(bold_img, mask_img)
    return _roi_glm(bold, design_matrix, rois, contrast, noise_model, radius, scale)


def _roi_glm(bold: _Bold, design_matrix, rois, contrast, noise_model, radius, scale) -> pd.DataFrame:
    names, idx = _roi_columns(bold, rois, radius)
    table = _glm_table(bold, design_matrix, names, idx, contrast, noise_model, scale)
    numeric = ("X", "Y", "Z", "Label distance (mm)")
    if isinstance(rois, pd.DataFrame):
        for col in ("Network", "X", "Y", "Z", "Label", "Label distance (mm)"):
            table[col] = rois[col].to_numpy() if col in rois else (np.nan if col in numeric else "")
    else:
        for col in ("Network", "X", "Y", "Z", "Label", "Label distance (mm)"):
            table[col] = np.nan if col in numeric else ""
    table["q"] = _bh(table["p"])
    return table[ROI_COLUMNS]


@dataclass(frozen=True)
class NetworkTest:
    """GLM on the mean time series of a whole network (one ROI)."""

    name: str
    effect: float
    se: float
    ci_low: float
    ci_high: float
    t: float
    dof: float
    z: float
    p: float
    n_voxels: int
    alpha: float
    unit: str

    @property
    def significant(self) -> bool:
        return bool(np.isfinite(self.p) and self.p < self.alpha)

    @property
    def deactivated(self) -> bool:
        """Negative effect with p < alpha."""
        return self.significant and self.effect < 0

    @property
    def activated(self) -> bool:
        """Positive effect with p < alpha."""
        return self.significant and self.effect > 0


def _network_test(bold: _Bold, design_matrix, idx: np.ndarray, contrast, noise_model, alpha, name,
                  scale=True) -> NetworkTest:
    row = _glm_table(bold, design_matrix, [name], [idx], contrast, noise_model, scale).iloc[0]
    return NetworkTest(name=name, effect=float(row["Effect"]), se=float(row["SE"]), ci_low=float(row["CI Low"]),
                       ci_high=float(row["CI High"]), t=float(row["t"]), dof=float(row["dof"]), z=float(row["z"]),
                       p=float(row["p"]), n_voxels=int(row["Voxels"]), alpha=float(alpha), unit=str(row["Unit"]))


@_blas_limited
def network_test(bold_img, design_matrix: pd.DataFrame, network, contrast, noise_model: str = "ar1", *,
                 mask_img=None, alpha: float = 0.05, name: str = "Default Mode Network",
                 radius: float = DEFAULT_NODE_RADIUS) -> NetworkTest:
    """GLM on the mean time series of a whole network.

    Parameters
    ----------
    network : Nifti1Image or DataFrame
        A network mask image (e.g. the Yeo Default network), or node coordinates whose spheres
        (``radius`` mm) are pooled into one ROI.
    alpha : float
        ``deactivated`` / ``activated`` mean p < alpha with a negative / positive effect.

    Other parameters are those of :func:`roi_glm`.
    """
    bold = _Bold(bold_img, mask_img)
    return _network_test(bold, design_matrix, _network_index(bold, network, radius), contrast, noise_model,
                         alpha, name)


def _network_index(bold: _Bold, network, radius: float) -> np.ndarray:
    if isinstance(network, pd.DataFrame):
        parts = [bold.sphere(row, radius) for row in network[["X", "Y", "Z"]].to_numpy(dtype=float)]
        return np.unique(np.concatenate(parts)) if parts else np.array([], dtype=int)
    return bold.in_mask(network)


# --------------------------------------------------------------------------------------------
# overlap and seed map
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DMNOverlap:
    """Overlap of the thresholded map with the DMN (voxels of the stat map's grid, inside the brain).

    ``threshold`` is signed (negative for deactivation). ``share_dmn_below`` is the fraction of
    DMN voxels beyond the threshold, ``share_below_in_dmn`` the fraction of supra-threshold voxels
    that lie inside the DMN (NaN when there are none), ``dice`` the Dice coefficient.
    """

    threshold: float
    n_dmn: int
    n_suprathreshold: int
    n_overlap: int
    share_dmn_below: float
    share_below_in_dmn: float
    dice: float
    voxel_mm3: float


def _overlap(stat_img, threshold: float, network_img, mask_img=None) -> DMNOverlap:
    data = np.asarray(stat_img.dataobj, dtype=float).reshape(stat_img.shape[:3])
    supra = (data < threshold) if threshold < 0 else (data > threshold)
    return _overlap_of(supra, stat_img, threshold, network_img, mask_img)


def _overlap_of(supra: np.ndarray, stat_img, threshold: float, network_img, mask_img=None) -> DMNOverlap:
    data = np.asarray(stat_img.dataobj, dtype=float).reshape(stat_img.shape[:3])
    brain = _resample_mask(mask_img, stat_img) if mask_img is not None else np.isfinite(data) & (data != 0)
    brain &= np.isfinite(data)
    dmn = _resample_mask(network_img, stat_img) & brain
    supra = supra & brain
    n_dmn, n_supra, n_both = int(dmn.sum()), int(supra.sum()), int((dmn & supra).sum())
    return DMNOverlap(threshold=float(threshold), n_dmn=n_dmn, n_suprathreshold=n_supra, n_overlap=n_both,
                      share_dmn_below=n_both / n_dmn if n_dmn else math.nan,
                      share_below_in_dmn=n_both / n_supra if n_supra else math.nan,
                      dice=2 * n_both / (n_dmn + n_supra) if (n_dmn + n_supra) else math.nan,
                      voxel_mm3=float(abs(np.linalg.det(stat_img.affine[:3, :3]))))


def dmn_overlap(z_img, threshold: float, dmn_mask_img, mask_img=None) -> DMNOverlap:
    """Share of DMN voxels below ``-|threshold|`` and share of those deactivated voxels inside the DMN.

    Parameters
    ----------
    z_img : Nifti1Image
        Unthresholded z map.
    threshold : float
        The z cut-off actually used (its sign is ignored: deactivation is ``z < -|threshold|``).
    dmn_mask_img : Nifti1Image
        Network mask (any grid; resampled to the z map's grid by nearest neighbour).
    mask_img : Nifti1Image, optional
        Brain mask; default: finite non-zero z values.
    """
    return _overlap(z_img, -abs(float(threshold)), dmn_mask_img, mask_img)


def thresholded_overlap(thresholded_img, dmn_mask_img, mask_img=None, *, sign: int = -1,
                        threshold: float = math.nan) -> DMNOverlap:
    """Overlap of a map *already thresholded* (e.g. by :func:`analysis.inference.apply_threshold`) with the DMN.

    The supra-threshold voxels are the non-zero voxels of ``thresholded_img`` with the given ``sign``
    (-1: the negative side, deactivation), so the counts are those of the very map the results report
    (cluster extent included), never a re-derived cut-off.

    Parameters
    ----------
    thresholded_img : Nifti1Image
        z values where a voxel survived, 0 elsewhere.
    dmn_mask_img, mask_img
        As in :func:`dmn_overlap`.
    sign : {-1, 1}
        Which side to count.
    threshold : float
        The signed z cut-off that produced the map, kept for the record (NaN when the procedure had none).
    """
    data = np.asarray(thresholded_img.dataobj, dtype=float).reshape(thresholded_img.shape[:3])
    supra = (data < 0) if sign < 0 else (data > 0)
    return _overlap_of(supra, thresholded_img, threshold, dmn_mask_img, mask_img)


@dataclass(frozen=True)
class ThresholdOverlap:
    """Overlap of one thresholded map of the results chapter (one sign) with the DMN mask."""

    key: str
    label: str
    threshold_text: str
    has_cutoff: bool
    n_dmn: int
    n_below: int  # supra-threshold voxels of that sign in the brain (the results chapter's count)
    n_overlap: int
    share_dmn_below: float | None
    share_below_in_dmn: float | None


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def overlaps_by_threshold(thresholded: Mapping, dmn_mask_img, mask_img=None, *,
                          sign: int = -1) -> list[ThresholdOverlap]:
    """:func:`thresholded_overlap` for every threshold of the results chapter.

    Parameters
    ----------
    thresholded : mapping
        ``{key: (thresholded_img, ThresholdResult)}`` as :func:`analysis.inference.threshold_all` returns.

    Returns
    -------
    list of ThresholdOverlap
        One per threshold, in order (shares None when undefined).
    """
    out = []
    for key, (img, res) in thresholded.items():
        cut = sign * res.z_threshold if res.has_cutoff else math.nan
        ov = thresholded_overlap(img, dmn_mask_img, mask_img, sign=sign, threshold=cut)
        out.append(ThresholdOverlap(
            key=key, label=res.label, threshold_text=res.threshold_text, has_cutoff=res.has_cutoff,
            n_dmn=ov.n_dmn, n_below=ov.n_suprathreshold, n_overlap=ov.n_overlap,
            share_dmn_below=_finite_or_none(ov.share_dmn_below),
            share_below_in_dmn=_finite_or_none(ov.share_below_in_dmn)))
    return out


def _seed_series(bold: _Bold, seed, radius: float) -> tuple[np.ndarray, int]:
    idx = bold.sphere(seed, radius)
    if idx.size == 0:
        raise ValueError(f"the seed sphere ({radius:g} mm around {tuple(seed)}) has no voxel in the mask")
    y = bold.series(idx).mean(axis=1)
    t = np.arange(len(y), dtype=float)
    y = y - np.polyval(np.polyfit(t, y, 1), t)  # detrend, as nilearn's example masker does
    sd = y.std(ddof=1)
    return (y / sd if sd > 0 else y), int(idx.size)


@_blas_limited
def seed_map(bold_img, design_matrix: pd.DataFrame, mask_img, seed: Sequence[float] = PCC_SEED, t_r: float = None,
             *, radius: float = 8.0, noise_model: str = "ar1", smoothing_fwhm: float | None = None,
             seed_name: str = "pcc_seed") -> nib.Nifti1Image:
    """Seed-based z map: the seed's mean time series as an extra regressor of the design.

    As nilearn's ``examples/04_glm_first_level/plot_adhd_dmn.py``: the mean signal of a sphere
    (``radius`` mm) around ``seed`` (MNI mm; default the posterior cingulate, (0, -53, 26)),
    linearly detrended and standardised, is added as a column of ``design_matrix``; the z map of
    that column is returned (the task regressors stay in the model, so it shows coupling beyond the task).

    Parameters
    ----------
    t_r : float
        Repetition time (s); None infers it from the design matrix index (frame times).
    noise_model : str
        As in :func:`roi_glm`.
    """
    bold = _Bold(bold_img, mask_img)
    return _seed_map(bold, design_matrix, mask_img, seed, t_r, radius, noise_model, smoothing_fwhm, seed_name)[0]


def _t_r(design_matrix: pd.DataFrame, t_r: float | None) -> float:
    if t_r is not None:
        return float(t_r)
    steps = np.diff(np.asarray(design_matrix.index, dtype=float))
    if steps.size == 0 or not np.all(steps > 0):
        raise ValueError("t_r is needed: the design matrix index holds no frame times")
    return float(np.median(steps))


def _seed_map(bold: _Bold, design_matrix, mask_img, seed, t_r, radius, noise_model, smoothing_fwhm, seed_name,
              model=None):
    from .noise import fit_first_level

    series, n_vox = _seed_series(bold, seed, radius)
    design = design_matrix.copy()
    design.insert(0, seed_name, series)
    if model is not None and smoothing_fwhm is None and hasattr(model, "z_map"):
        # the main model's matrix and projections: one more column, no new pass over the data but for it
        X = design.to_numpy(dtype=float)
        con = np.zeros(X.shape[1])
        con[0] = 1.0
        return model.unmask(model.z_map(X, con, noise_model)), n_vox
    if model is not None and smoothing_fwhm is None:  # the main model's masked, scaled data: no new fit
        from .noise import DEFAULT_RHO_FWHM, estimate_rho, model_data, t_contrast_z

        Y = model_data(model)
        X = design.to_numpy(dtype=float)
        rho = estimate_rho(Y, X, noise_model, mask_img=model.masker_.mask_img_,
                           rho_fwhm=getattr(model, "rho_fwhm_", DEFAULT_RHO_FWHM))
        con = np.zeros(X.shape[1])
        con[0] = 1.0
        return model.masker_.inverse_transform(t_contrast_z(Y, X, rho, con)), n_vox
    if mask_img is None:
        mask_img = nib.Nifti1Image(bold.mask.astype(np.uint8), bold.affine)
    model = fit_first_level(bold.image(), design, mask_img, t_r=_t_r(design_matrix, t_r), noise_model=noise_model,
                            smoothing_fwhm=smoothing_fwhm, minimize_memory=True)
    seed_con = np.zeros(design.shape[1])
    seed_con[0] = 1.0  # the seed regressor is column 0; nilearn gets numbers, never a string to evaluate
    z_img = model.compute_contrast(seed_con, output_type="z_score")
    return z_img, n_vox


@dataclass(frozen=True)
class SeedSummary:
    """Where the seed map is and how it overlaps the DMN (``overlap`` uses ``z > threshold``)."""

    seed: tuple[float, float, float]
    radius: float
    n_voxels: int
    threshold: float
    overlap: DMNOverlap
    threshold_label: str = ""  # the threshold applied to the seed map itself (e.g. the report's primary one)
    threshold_text: str = ""  # the z cut-off it gave on the seed map, e.g. "|z| > 4.10"

    @property
    def has_cutoff(self) -> bool:
        """False when the threshold procedure found no z cut-off on the seed map."""
        return bool(np.isfinite(self.threshold))


# --------------------------------------------------------------------------------------------
# the whole analysis
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DMNResult:
    """Everything the DMN chapter reports (no images; see :func:`analyse_dmn`)."""

    __pydantic_config__ = JSON_CONFIG

    space: str
    applicable: bool
    reason: str = ""
    contrast: str = ""
    noise_model: str = ""
    alpha: float = 0.05
    network_source: str = ""
    node_radius: float = DEFAULT_NODE_RADIUS
    n_schaefer_parcels: int = 0
    network: NetworkTest | None = None
    network_schaefer: NetworkTest | None = None
    control_network: NetworkTest | None = None
    nodes_table: Table | None = field(default=None, compare=False)
    control_table: Table | None = field(default=None, compare=False)
    overlap: DMNOverlap | None = None
    seed: SeedSummary | None = None
    atlas_table: Table | None = field(default=None, compare=False)
    unavailable: dict[str, str] = field(default_factory=dict)
    control_name: str = ""  # the Seitzman network used as positive control ("" = none)
    control_choice: str = ""  # why that network (or none), for the prose

    # ---- facts for the prose (no arithmetic in templates) ----
    @property
    def deactivated(self) -> bool:
        """The network-level test shows a negative effect with p < alpha."""
        return self.network is not None and self.network.deactivated

    @property
    def n_nodes(self) -> int:
        return 0 if self.nodes_table is None else len(self.nodes_table)

    @property
    def n_control_nodes(self) -> int:
        return 0 if self.control_table is None else len(self.control_table)

    def _nodes(self, table, sign: int) -> pd.DataFrame:
        if table is None or table.empty:
            return pd.DataFrame(columns=ROI_COLUMNS)
        hit = (table["q"] < self.alpha) & (np.sign(table["Effect"]) == sign)
        return table[hit.fillna(False).astype(bool)].sort_values("p")

    @property
    def deactivated_nodes(self) -> pd.DataFrame:
        """DMN nodes with a negative effect and FDR q < alpha, smallest p first."""
        return self._nodes(self.nodes_table, -1)

    @property
    def activated_nodes(self) -> pd.DataFrame:
        return self._nodes(self.nodes_table, +1)

    @property
    def n_nodes_deactivated(self) -> int:
        return len(self.deactivated_nodes)

    @property
    def n_nodes_activated(self) -> int:
        return len(self.activated_nodes)

    @property
    def n_control_activated(self) -> int:
        return len(self._nodes(self.control_table, +1))

    @property
    def control_detected(self) -> bool:
        """The auditory control network shows a positive effect with p < alpha."""
        return self.control_network is not None and self.control_network.activated

    @property
    def top_deactivated(self) -> list[dict]:
        """Up to three deactivated nodes as dicts (ROI, Label, X, Y, Z, Effect, t, q)."""
        return self.deactivated_nodes.head(3).to_dict(orient="records")


@dataclass(frozen=True)
class DMNImages:
    """The images of :func:`analyse_dmn` (on the z map's grid), for the derivatives and the figures."""

    dmn_mask: nib.Nifti1Image | None = None
    schaefer_mask: nib.Nifti1Image | None = None
    seed_z: nib.Nifti1Image | None = None
    seed_thresholded: nib.Nifti1Image | None = None


@_blas_limited
def analyse_dmn(bold_img, design_matrix: pd.DataFrame, z_img, negative_threshold: float, mask_img=None, *,
                contrast, noise_model: str = "ar1", alpha: float = 0.05, data_dir=None,
                space: str = "MNI152NLin2009cAsym", t_r: float | None = None,
                node_radius: float = DEFAULT_NODE_RADIUS, seed: Sequence[float] = PCC_SEED,
                seed_radius: float = 8.0, seed_threshold: float | None = None, compute_seed: bool = True,
                definitions: DMNDefinitions | None = None, atlases: Mapping[str, LoadedAtlas] | None = None,
                model=None, thresholded_img=None, seed_threshold_spec=None,
                control_network: str | None = CONTROL_NETWORK, control_choice: str = "", **fetch_kwargs):
    """The DMN chapter's analysis in one call.

    Parameters
    ----------
    bold_img : Nifti1Image
        The 4D run (in ``space``).
    design_matrix : DataFrame
        The first-level design matrix (one row per scan).
    z_img : Nifti1Image
        The contrast's z map.
    negative_threshold : float
        The z cut-off actually used for the map (sign ignored; deactivation is ``z < -|threshold|``).
        Only used when ``thresholded_img`` is not given.
    mask_img : Nifti1Image, optional
        Brain mask.
    contrast : str or array
        The contrast (``"listening"``).
    noise_model : str
        Passed to :func:`roi_glm` and :func:`seed_map`.
    alpha : float
        Significance level of the network tests and the FDR across nodes.
    data_dir : path or None
        nilearn's ``data_dir`` for the atlases (None honours ``NILEARN_DATA``).
    space : str
        Space of the data. Not MNI: nothing is computed, ``applicable`` is False.
    t_r : float, optional
        For the seed map (inferred from the design index if None).
    node_radius, seed, seed_radius
        Sphere radii (mm) and the seed centre (MNI mm).
    seed_threshold : float, optional
        z cut-off for the seed map's overlap with the DMN (default: ``|negative_threshold|``).
    compute_seed : bool
        Skip the (whole-brain) seed GLM when False.
    definitions, atlases
        Already loaded DMN definitions / atlases (fetched from ``data_dir`` otherwise).
    thresholded_img : Nifti1Image, optional
        The map as thresholded for the results (cluster extent included). The overlap then counts its
        negative voxels (:func:`thresholded_overlap`), so the DMN figures agree with the results' counts.
    seed_threshold_spec : analysis.inference.ThresholdSpec, optional
        Threshold the seed map with this procedure (computed on the seed map itself) instead of
        ``|z| > seed_threshold``.
    control_network : str or None
        The Seitzman network used as positive control, or None (see :func:`dmn_definitions`).
    control_choice : str
        Why this control (or none) was chosen, kept for the prose.
    model : FirstLevelModel, optional
        The main model, fitted on ``bold_img`` and ``design_matrix`` with ``noise_model`` and
        ``minimize_memory=False`` (:func:`analysis.noise.fit_first_level`). The seed GLM then reuses its
        masked, scaled data and computes only the seed's z map (the same map as a new fit, to rounding
        error) instead of masking and fitting the run again.
    **fetch_kwargs
        For :func:`analysis.atlas.fetch_atlas` (``download``, ``budget``).

    Returns
    -------
    (DMNResult, DMNImages)
        The results, and the images the derivatives and figures are made of (None where not computed).
    """
    contrast_text = contrast if isinstance(contrast, str) else str(list(np.asarray(contrast, dtype=float)))
    images: dict[str, nib.Nifti1Image | None] = {"dmn_mask": None, "schaefer_mask": None, "seed_z": None}
    if not is_mni(space):
        res = DMNResult(space=str(space), applicable=False, contrast=contrast_text, noise_model=noise_model,
                        alpha=alpha, reason=f"the data are in {space} space, not MNI space, so the MNI atlases "
                                            "of the network do not apply")
        return res, DMNImages(**images)
    atlases = dict(atlases or {})
    defs = definitions or dmn_definitions(data_dir, node_radius=node_radius, atlases=atlases,
                                          control_network=control_network, **fetch_kwargs)
    all_atlases: dict[str, LoadedAtlas | AtlasStatus] = dict(defs.statuses)
    all_atlases.update(atlases)
    label_atlases = {k: atlases[k] if k in atlases else fetch_atlas(k, data_dir, **fetch_kwargs)
                     for k in _atlas.LABEL_ATLASES}
    all_atlases.update(label_atlases)
    for key in _atlas.COMPARISON_ATLASES:
        if key not in all_atlases:
            all_atlases[key] = fetch_atlas(key, data_dir, **fetch_kwargs)
    atlas_table = _atlas.atlas_comparison_table(all_atlases)
    unavailable = _atlas.unavailable_atlases({k: v for k, v in all_atlases.items()
                                              if k in _atlas.COMPARISON_ATLASES})

    bold = _Bold(bold_img, mask_img)
    nodes, control = defs.nodes.copy(), defs.control.copy()
    for table in (nodes, control):
        if len(table):
            found = _atlas.label_coordinates(table[["X", "Y", "Z"]], label_atlases, space)
            table["Label"] = found["Label"].to_numpy()
            table["Label distance (mm)"] = found["Label distance (mm)"].to_numpy()
    nodes_table = _roi_glm(bold, design_matrix, nodes, contrast, noise_model, defs.node_radius, True)
    control_table = _roi_glm(bold, design_matrix, control, contrast, noise_model, defs.node_radius, True)

    network = network_schaefer = control_test = overlap = None
    main = defs.main_img
    if main is not None:
        network = _network_test(bold, design_matrix, bold.in_mask(main), contrast, noise_model, alpha,
                                "Default Mode Network")
        if thresholded_img is not None:
            cut = -abs(float(negative_threshold))
            overlap = thresholded_overlap(thresholded_img, main, mask_img, sign=-1,
                                          threshold=cut if math.isfinite(cut) else math.nan)
        else:
            overlap = _overlap(z_img, -abs(float(negative_threshold)), main, mask_img)
        images["dmn_mask"] = nib.Nifti1Image(_resample_mask(main, z_img).astype(np.uint8), z_img.affine)
    if defs.schaefer_img is not None:
        network_schaefer = _network_test(bold, design_matrix, bold.in_mask(defs.schaefer_img), contrast,
                                         noise_model, alpha, "Schaefer 2018 Default parcels")
        images["schaefer_mask"] = nib.Nifti1Image(_resample_mask(defs.schaefer_img, z_img).astype(np.uint8),
                                                  z_img.affine)
    if len(control):
        control_test = _network_test(bold, design_matrix, _network_index(bold, control, defs.node_radius),
                                     contrast, noise_model, alpha, f"{defs.control_name} network")
    seed_summary = None
    if compute_seed and main is not None:
        seed_z, n_vox = _seed_map(bold, design_matrix, mask_img, seed, t_r, seed_radius, noise_model, None,
                                  "pcc_seed", model=model)
        if seed_threshold_spec is not None:
            from .inference import apply_threshold

            seed_thr_img, seed_thr = apply_threshold(seed_z, mask_img if mask_img is not None else
                                                     nib.Nifti1Image(bold.mask.astype(np.uint8), bold.affine),
                                                     seed_threshold_spec)
            seed_summary = SeedSummary(
                seed=tuple(float(v) for v in seed), radius=float(seed_radius), n_voxels=n_vox,
                threshold=seed_thr.z_threshold if seed_thr.has_cutoff else math.nan,
                overlap=thresholded_overlap(seed_thr_img, main, mask_img, sign=1,
                                            threshold=seed_thr.z_threshold if seed_thr.has_cutoff else math.nan),
                threshold_label=seed_thr.label, threshold_text=seed_thr.threshold_text)
            images["seed_thresholded"] = seed_thr_img
        else:
            thr = abs(float(seed_threshold if seed_threshold is not None else negative_threshold))
            seed_summary = SeedSummary(seed=tuple(float(v) for v in seed), radius=float(seed_radius),
                                       n_voxels=n_vox, threshold=thr, overlap=_overlap(seed_z, thr, main, mask_img),
                                       threshold_label=f"z > {thr:.2f}", threshold_text=f"z > {thr:.2f}")
        images["seed_z"] = seed_z
    res = DMNResult(space=str(space), applicable=True, contrast=contrast_text, noise_model=noise_model,
                    alpha=float(alpha), network_source=defs.network_source, node_radius=defs.node_radius,
                    n_schaefer_parcels=defs.n_schaefer_parcels, network=network, network_schaefer=network_schaefer,
                    control_network=control_test, nodes_table=nodes_table, control_table=control_table,
                    overlap=overlap, seed=seed_summary, atlas_table=atlas_table, unavailable=unavailable,
                    control_name=defs.control_name or "", control_choice=control_choice)
    return res, DMNImages(**images)
