"""Immutable results objects and their JSON form.

Renderers (figures, tables, text, chapters) only read these. Numbers that the prose
quotes are exposed as attributes or as formatted properties.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .config import Config
from .inference import ThresholdResult

__all__ = ["DatasetInfo", "ModelInfo", "ContrastResult", "Results", "df_to_records", "df_from_records", "plain"]


def df_to_records(df: pd.DataFrame | None) -> dict | None:
    """DataFrame -> ``{"columns": [...], "data": [[...], ...]}`` with NaN/NA as ``null``."""
    if df is None:
        return None
    data = []
    for row in df.itertuples(index=False):
        data.append([plain(v) for v in row])
    return {"columns": [str(c) for c in df.columns], "data": data}


def df_from_records(d: dict | None) -> pd.DataFrame | None:
    """Inverse of :func:`df_to_records`."""
    if d is None:
        return None
    return pd.DataFrame(d["data"], columns=d["columns"])


def plain(v):
    """JSON-safe copy of a value, dict or list: numpy scalars to Python, NaN/inf/NA to ``None``."""
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if v is None or v is pd.NA:
        return None
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


@dataclass(frozen=True)
class DatasetInfo:
    """What was analysed (the data chapter's table and the fallback notice)."""

    dataset: str
    description: str
    space: str
    is_simulated: bool
    fallback_reason: str
    shape: tuple[int, ...]
    voxel_size: tuple[float, ...]
    dtype: str
    value_min: float
    value_max: float
    n_scans: int
    t_r: float
    t_r_header: float
    has_anat: bool
    events: pd.DataFrame
    files: dict[str, dict[str, str]]  # name -> {"path": ..., "sha256": ...}
    t_r_source: str = ""  # where the TR came from (BIDS sidecar, fetcher, header, simulation)
    acquired_space: str = ""  # space of the images as acquired ("native" when preprocessing normalised them)

    @property
    def conditions(self) -> list[str]:
        return sorted(self.events["trial_type"].unique())

    @property
    def has_time_series(self) -> bool:
        return self.n_scans > 0

    @property
    def run_length_s(self) -> float:
        return self.n_scans * self.t_r


@dataclass(frozen=True)
class ModelInfo:
    """The fitted first-level model, described for the methods section."""

    noise_model: str
    hrf_model: str
    drift_model: str
    high_pass: float
    smoothing_fwhm: float
    signal_scaling: int
    standardize: bool
    design_columns: tuple[str, ...]
    conditions: tuple[str, ...]
    n_drift: int
    dof: float
    n_mask_voxels: int
    mask_source: str
    contrast_matrix: pd.DataFrame
    n_excluded_nonfinite: int = 0
    n_excluded_constant: int = 0

    @property
    def n_regressors(self) -> int:
        return len(self.design_columns)


@dataclass(frozen=True)
class ContrastResult:
    """Inference for one contrast."""

    name: str
    entity: str
    expression: str
    vector: tuple[float, ...]
    thresholds: tuple[ThresholdResult, ...]
    primary_key: str
    clusters: pd.DataFrame
    z_max: float
    z_min: float
    direction: str = ""  # what a positive value means, e.g. "listening > rest"
    files: dict[str, str] = field(default_factory=dict)  # role -> path relative to the output folder
    recovery: dict[str, float] | None = None  # simulated data only: detection vs ground truth at FDR

    @property
    def primary(self) -> ThresholdResult:
        return self.threshold(self.primary_key)

    def threshold(self, key: str) -> ThresholdResult:
        for t in self.thresholds:
            if t.key == key:
                return t
        raise KeyError(f"no threshold {key!r}; have {[t.key for t in self.thresholds]}")

    @property
    def negative_direction(self) -> str:
        """What a negative value means (``listening < rest``)."""
        return self.direction.replace(" > ", " < ")

    @property
    def threshold_label(self) -> str:
        """``FDR q < 0.05 (|z| > 3.41)`` — label plus the cut-off used."""
        return f"{self.primary.label} ({self.primary.threshold_text})"

    def peaks(self, sign: str | None = None) -> pd.DataFrame:
        """Main peaks (one per cluster), optionally of one sign (``"+"`` or ``"-"``)."""
        t = self.clusters
        t = t[t["Cluster ID"].astype(str).str.fullmatch(r"\d+")]
        if sign is not None:
            t = t[t["Sign"] == ("+" if sign == "+" else "\u2212")]
        return t

    def to_dict(self) -> dict:
        return {"name": self.name, "entity": self.entity, "expression": self.expression,
                "vector": list(self.vector), "thresholds": [t.to_dict() for t in self.thresholds],
                "primary_key": self.primary_key, "clusters": df_to_records(self.clusters),
                "z_max": self.z_max, "z_min": self.z_min, "direction": self.direction, "files": dict(self.files), "recovery": self.recovery}

    @classmethod
    def from_dict(cls, d: dict) -> "ContrastResult":
        clusters = df_from_records(d["clusters"])
        return cls(name=d["name"], entity=d["entity"], expression=d["expression"], vector=tuple(d["vector"]),
                   thresholds=tuple(ThresholdResult.from_dict(t) for t in d["thresholds"]),
                   primary_key=d["primary_key"], clusters=clusters, z_max=d["z_max"], z_min=d["z_min"],
                   direction=d["direction"], files=d["files"], recovery=d["recovery"])


@dataclass(frozen=True)
class Results:
    """Everything the report shows, computed once by :func:`analysis.pipeline.run`."""

    cache_key: str
    config: Config
    dataset: DatasetInfo
    model: ModelInfo | None  # None for a report from an existing statistical map
    contrasts: dict[str, ContrastResult]
    figures: dict[str, str]  # role -> path relative to the output folder
    versions: dict[str, str]
    extras: dict[str, Any] = field(default_factory=dict)  # calibration, dmn, preprocessing (plain dicts)
    output_dir: str = "."

    def contrast(self, name: str | None = None) -> ContrastResult:
        """The named contrast, or the first configured one."""
        if name is None:
            return next(iter(self.contrasts.values()))
        try:
            return self.contrasts[name]
        except KeyError:
            raise KeyError(f"no contrast {name!r}; configured: {', '.join(self.contrasts)}") from None

    def path(self, relative: str) -> Path:
        """Absolute path of an output file recorded in the results."""
        return Path(self.output_dir) / relative

    def figure(self, role: str) -> Path:
        return self.path(self.figures[role])

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        ds = self.dataset
        return {
            "cache_key": self.cache_key,
            "config": self.config.to_dict(),
            "dataset": {**{k: getattr(ds, k) for k in (
                "dataset", "description", "space", "is_simulated", "fallback_reason", "dtype", "value_min",
                "value_max", "n_scans", "t_r", "t_r_header", "has_anat", "files", "t_r_source", "acquired_space")},
                "shape": list(ds.shape), "voxel_size": list(ds.voxel_size), "events": df_to_records(ds.events)},
            "model": None if self.model is None else {**{k: getattr(self.model, k) for k in (
                "noise_model", "hrf_model", "drift_model", "high_pass", "smoothing_fwhm", "signal_scaling",
                "standardize", "n_drift", "dof", "n_mask_voxels", "mask_source", "n_excluded_nonfinite",
                "n_excluded_constant")},
                "design_columns": list(self.model.design_columns), "conditions": list(self.model.conditions),
                "contrast_matrix": df_to_records(self.model.contrast_matrix.reset_index(names="contrast"))},
            "contrasts": {k: v.to_dict() for k, v in self.contrasts.items()},
            "figures": dict(self.figures),
            "versions": dict(self.versions),
            "extras": self.extras,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True, ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict, output_dir: str | Path = ".") -> "Results":
        ds = dict(d["dataset"])
        ds["shape"] = tuple(ds["shape"])
        ds["voxel_size"] = tuple(ds["voxel_size"])
        ds["events"] = df_from_records(ds["events"])
        model = None
        if d["model"] is not None:
            m = dict(d["model"])
            m["design_columns"] = tuple(m["design_columns"])
            m["conditions"] = tuple(m["conditions"])
            m["contrast_matrix"] = df_from_records(m["contrast_matrix"]).set_index("contrast")
            model = ModelInfo(**m)
        return cls(cache_key=d["cache_key"], config=Config.from_dict(d["config"], source="results.json"),
                   dataset=DatasetInfo(**ds), model=model,
                   contrasts={k: ContrastResult.from_dict(v) for k, v in d["contrasts"].items()},
                   figures=d["figures"], versions=d["versions"], extras=d.get("extras", {}),
                   output_dir=str(output_dir))

    @classmethod
    def from_json(cls, path: str | Path, output_dir: str | Path | None = None) -> "Results":
        path = Path(path)
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")),
                             output_dir=output_dir if output_dir is not None else path.parent.parent)
