"""Thresholds and cluster tables. No plotting, no prose.

Every threshold is computed by nilearn's :func:`~nilearn.glm.threshold_stats_img`,
which returns the cut-off it actually used; that value is stored and reused by
captions and text, never re-derived.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np

from .serial import JSON_CONFIG

if TYPE_CHECKING:  # nilearn, nibabel, scipy and pandas are imported where used: results.py imports this module
    import nibabel as nib
    import pandas as pd

    from .config import InferenceConfig

__all__ = ["ThresholdSpec", "ThresholdResult", "threshold_specs", "apply_threshold", "threshold_all",
           "cluster_table", "mask_map", "CLUSTER_COLUMNS"]

CLUSTER_COLUMNS = ["Cluster ID", "Sign", "X", "Y", "Z", "Peak Stat", "Peak p", "Cluster Size (voxels)",
                   "Cluster Size (mm3)"]


def _faces():
    """nilearn's cluster connectivity (NN1, faces)."""
    from scipy import ndimage

    return ndimage.generate_binary_structure(3, 1)


@dataclass(frozen=True)
class ThresholdSpec:
    """One way of thresholding a z map, in nilearn's terms."""

    key: str  # z3 | fpr | fdr | fdr_cluster | bonferroni | cluster_fwe
    height_control: str | None  # None | "fpr" | "fdr" | "bonferroni"
    alpha: float
    threshold: float | None  # z cut-off when height_control is None
    cluster_threshold: int
    two_sided: bool
    fwe_alpha: float | None = None  # cluster_fwe: the cluster-level FWE level (alpha is the CDT's p)

    @property
    def label(self) -> str:
        """Human label, e.g. ``FDR q < 0.05`` or ``z > 3, k >= 10``."""
        tail = "" if self.two_sided else ", one-sided"
        if self.key == "cluster_fwe":  # random-field theory: the extent is the critical cluster size
            return f"cluster-level FWE p < {self.fwe_alpha:g} (CDT p < {self.alpha:g})" + tail
        if self.height_control is None:
            base = f"|z| > {self.threshold:g}" if self.two_sided else f"z > {self.threshold:g}"
        else:
            base = {"fpr": f"p < {self.alpha:g} uncorrected",
                    "fdr": f"FDR q < {self.alpha:g}",
                    "bonferroni": f"FWE (Bonferroni) p < {self.alpha:g}"}[self.height_control]
        extent = f" with clusters \u2265 {self.cluster_threshold} voxels" if self.cluster_threshold else ""
        return base + extent + tail


@dataclass(frozen=True)
class ThresholdResult:
    """Outcome of one threshold on one z map."""

    __pydantic_config__ = JSON_CONFIG  # NaN and inf survive JSON (analysis.serial)

    spec: ThresholdSpec
    z_threshold: float  # the cut-off actually applied (inf when nothing can survive, e.g. FDR)
    n_pos: int
    n_neg: int
    n_pos_clusters: int
    n_neg_clusters: int
    n_mask: int

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def survived(self) -> bool:
        return (self.n_pos + self.n_neg) > 0

    @property
    def has_cutoff(self) -> bool:
        """False when the procedure found no z cut-off at all (FDR on a map without signal)."""
        return math.isfinite(self.z_threshold)

    @property
    def threshold_text(self) -> str:
        """``|z| > 3.29``, or ``none: no voxel can pass`` when the procedure found no cut-off."""
        if not self.has_cutoff:
            return "none: no voxel can pass"
        sym = "|z|" if self.spec.two_sided else "z"
        return f"{sym} > {self.z_threshold:.2f}"


def threshold_specs(cfg: InferenceConfig, cluster_fwe_extent: int | None = None) -> list[ThresholdSpec]:
    """The seed notebook's thresholds side by side, plus Bonferroni FWE.

    With ``cluster_fwe_extent`` (the random-field critical cluster size in voxels at the cluster-forming
    threshold ``cfg.cdt_alpha``, :meth:`analysis.rft.ClusterTheory.extent_threshold`), a sixth threshold,
    ``cluster_fwe``: clusters at p < ``cdt_alpha`` uncorrected that are significant at cluster-level FWE
    ``cfg.alpha``, i.e. at least that large.
    """
    two = cfg.two_sided
    specs = [
        ThresholdSpec("z3", None, cfg.fpr_alpha, cfg.z_threshold, 0, two),
        ThresholdSpec("fpr", "fpr", cfg.fpr_alpha, None, 0, two),
        ThresholdSpec("fdr", "fdr", cfg.alpha, None, 0, two),
        ThresholdSpec("fdr_cluster", "fdr", cfg.alpha, None, cfg.cluster_threshold, two),
        ThresholdSpec("bonferroni", "bonferroni", cfg.alpha, None, 0, two),
    ]
    if cluster_fwe_extent is not None:
        specs.append(ThresholdSpec("cluster_fwe", "fpr", cfg.cdt_alpha, None, int(cluster_fwe_extent), two,
                                   cfg.alpha))
    return specs


def apply_threshold(z_img: nib.Nifti1Image, mask_img: nib.Nifti1Image,
                    spec: ThresholdSpec) -> tuple[nib.Nifti1Image, ThresholdResult]:
    """Threshold ``z_img`` with nilearn and count what survives.

    Returns
    -------
    thresholded_img : Nifti1Image
        z values where the voxel survives, 0 elsewhere.
    result : ThresholdResult
        The cut-off used and the voxel and cluster counts per sign.
    """
    import nibabel as nib
    from nilearn.glm import threshold_stats_img
    from scipy import ndimage

    with warnings.catch_warnings():
        # nilearn 0.14 warns that the default threshold becomes another value in 0.15 whenever threshold == 3.0,
        # even when it is passed explicitly (our |z| > 3 map): only that warning is silenced
        warnings.filterwarnings("ignore", message=r"\s*From nilearn version>=0\.15, the default 'threshold'",
                                category=FutureWarning)
        thr_img, z_thr = threshold_stats_img(z_img, mask_img=mask_img, alpha=spec.alpha,
                                             threshold=spec.threshold, height_control=spec.height_control,
                                             cluster_threshold=spec.cluster_threshold,
                                             two_sided=spec.two_sided)
    data = np.asarray(thr_img.dataobj)
    if not math.isfinite(z_thr):
        data = np.zeros_like(data)
        thr_img = nib.Nifti1Image(data, thr_img.affine, thr_img.header)
    pos, neg = data > 0, data < 0
    n_mask = int(np.count_nonzero(np.asarray(mask_img.dataobj)))
    result = ThresholdResult(spec, float(z_thr), int(pos.sum()), int(neg.sum()),
                             int(ndimage.label(pos, _faces())[1]), int(ndimage.label(neg, _faces())[1]), n_mask)
    return thr_img, result


def threshold_all(z_img, mask_img, cfg: InferenceConfig, cluster_fwe_extent: int | None = None):
    """Apply every threshold of :func:`threshold_specs` (the sixth, ``cluster_fwe``, when its extent is given).

    Returns
    -------
    dict[str, tuple[Nifti1Image, ThresholdResult]]
    """
    return {spec.key: apply_threshold(z_img, mask_img, spec)
            for spec in threshold_specs(cfg, cluster_fwe_extent)}


def mask_map(z_img: nib.Nifti1Image, mask_img: nib.Nifti1Image | None) -> nib.Nifti1Image:
    """The z map with every voxel outside ``mask_img`` set to 0 (non-finite values too).

    Thresholds, cluster tables, labels, figures and derivatives all read this one masked map, so a
    supra-threshold value outside the brain (common in maps made elsewhere) can never reach a table.
    """
    import nibabel as nib

    data = np.asarray(z_img.dataobj, dtype=np.float32).reshape(z_img.shape[:3])
    keep = np.isfinite(data)
    if mask_img is not None:
        keep &= np.asarray(mask_img.dataobj).reshape(z_img.shape[:3]) > 0
    if keep.all() and data.dtype == np.asarray(z_img.dataobj).dtype:
        return z_img
    return nib.Nifti1Image(np.where(keep, data, np.float32(0)), z_img.affine)


def cluster_table(z_img: nib.Nifti1Image, result: ThresholdResult, min_distance: float = 8.0,
                  mask_img: nib.Nifti1Image | None = None) -> tuple[pd.DataFrame, nib.Nifti1Image | None]:
    """Cluster table (peaks and sub-peaks) at the threshold actually used, inside ``mask_img``.

    Columns: ``Cluster ID`` (``1``, ``1a``...; negative clusters follow positive ones), ``Sign``
    (``+`` for listening > rest), ``X``, ``Y``, ``Z`` (mm), ``Peak Stat`` (z), ``Peak p``
    (two- or one-sided as the threshold, uncorrected), ``Cluster Size (voxels)``, ``Cluster Size (mm3)``
    (blank for sub-peaks).

    ``mask_img`` is the mask the threshold was computed in (as for :func:`apply_threshold`); voxels outside
    it are set to 0 first (:func:`mask_map`), so the table describes exactly the voxels the threshold counted.

    Returns
    -------
    table : DataFrame
        Empty (with the columns) when no voxel survived.
    label_img : Nifti1Image or None
        Integer image; voxel value = the cluster's number (the integer part of ``Cluster ID``), 0 outside.
    """
    import nibabel as nib
    import pandas as pd
    from nilearn.reporting import get_clusters_table
    from scipy.stats import norm

    if not result.survived:
        return pd.DataFrame(columns=CLUSTER_COLUMNS), None
    z_img = mask_map(z_img, mask_img)
    table, label_maps = get_clusters_table(z_img, stat_threshold=result.z_threshold,
                                           cluster_threshold=result.spec.cluster_threshold,
                                           two_sided=result.spec.two_sided, min_distance=min_distance,
                                           return_label_maps=True)
    voxel_mm3 = float(np.prod(z_img.header.get_zooms()[:3]))
    table = table.copy()
    table["Cluster ID"] = table["Cluster ID"].astype(str)
    table["Sign"] = np.where(table["Peak Stat"] > 0, "+", "\u2212")
    sides = 2 if result.spec.two_sided else 1
    table["Peak p"] = sides * norm.sf(np.abs(table["Peak Stat"].astype(float)))
    size = pd.to_numeric(table["Cluster Size (mm3)"], errors="coerce")
    table["Cluster Size (mm3)"] = size
    table["Cluster Size (voxels)"] = (size / voxel_mm3).round()  # float: NaN for sub-peaks
    table = table[CLUSTER_COLUMNS].reset_index(drop=True)
    # Renumber clusters 1..N in table order and build one label image that matches the IDs
    # (nilearn numbers negative clusters after all positive candidates, before the extent filter).
    maps = [np.asarray(m.dataobj).astype(np.int32) for m in label_maps]
    inv = np.linalg.inv(z_img.affine)
    labels = np.zeros(z_img.shape[:3], dtype=np.int32)
    new_ids, number, suffix = [], 0, ""
    for _, row in table.iterrows():
        old = row["Cluster ID"]
        if old.isdigit():
            number += 1
            ijk = np.rint(inv @ np.array([row["X"], row["Y"], row["Z"], 1.0]))[:3].astype(int)
            lab = maps[0 if row["Peak Stat"] > 0 else -1]
            labels[lab == lab[tuple(ijk)]] = number
            suffix = ""
        else:
            suffix = old.lstrip("0123456789")
        new_ids.append(f"{number}{suffix}")
    table["Cluster ID"] = new_ids
    return table, nib.Nifti1Image(labels, z_img.affine)
