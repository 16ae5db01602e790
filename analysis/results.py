"""The typed, immutable results tree and its JSON form.

Renderers (figures, tables, text, chapters) only read these. Numbers that the prose quotes are exposed as
attributes or as formatted properties. The whole tree goes to ``results/results.json`` and back through one
mechanism, :mod:`analysis.serial` (pydantic over the dataclasses' type hints): no class writes its own
``to_dict`` / ``from_dict``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import Field

from . import serial
from .calibration import Calibration
from .config import Config
from .dmn import DMNResult, ThresholdOverlap
from .inference import ThresholdResult
from .rft import RFTInference
from .serial import JSON_CONFIG, Table

__all__ = ["InputFile", "DatasetInfo", "ModelInfo", "ContrastResult", "AtlasInfo", "PreprocessingContext",
           "Preprocessing", "ThresholdOverlap", "DMNAnalysis", "CalibrationResults", "StatmapInfo",
           "DMNOverlapSummary", "Results"]


@dataclass(frozen=True)
class InputFile:
    """One input file of the run and its SHA-256 (part of the cache key)."""

    path: str
    sha256: str


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
    events: Table
    files: dict[str, InputFile]
    t_r_source: str = ""  # where the TR came from (BIDS sidecar, fetcher, header, simulation)
    acquired_space: str = ""  # space of the images as acquired ("native" when preprocessing normalised them)
    median_tsnr: float | None = None  # median temporal SNR (mean / SD over time) in the analysis mask

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
    contrast_matrix: Table  # one row per contrast (index: contrast name), one column per regressor
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
    clusters: Table
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

    def peaks(self, sign: str | None = None):
        """Main peaks (one per cluster), optionally of one sign (``"+"`` or ``"-"``)."""
        t = self.clusters
        t = t[t["Cluster ID"].astype(str).str.fullmatch(r"\d+")]
        if sign is not None:
            t = t[t["Sign"] == ("+" if sign == "+" else "\u2212")]
        return t


@dataclass(frozen=True)
class AtlasInfo:
    """The label atlases of the cluster tables: caption, the atlases that could not be loaded, the space."""

    caption: str = ""
    unavailable: dict[str, str] = field(default_factory=dict)  # atlas -> why it was not available
    space: str = ""


@dataclass(frozen=True)
class PreprocessingContext:
    """What the preprocessing did and its motion QC (``preprocessing.md.j2``; numbers unformatted)."""

    n_volumes: int
    native_grid_label: str
    anat_grid_label: str
    realign_reference: str
    realign_levels: int
    realign_iterations: tuple[str, ...]
    normalisation: str
    normalisation_resolution: float
    syn_iterations: tuple[str, ...]
    target_resolution: float
    smoothing_fwhm: float
    fd_radius: float
    motion_regressors: int
    ants_version: str
    nilearn_version: str
    total_seconds: float
    mean_fd: float
    median_fd: float
    max_fd: float
    fd_threshold: float
    n_above: int
    fraction_above: float
    volumes_above: tuple[int, ...]
    max_abs_translation_mm: float
    max_abs_rotation_deg: float
    mask_dice: float
    anat_template_correlation: float
    peak_rss_mb: float


@dataclass(frozen=True)
class Preprocessing:
    """Whether the run was preprocessed (and why not), in which space it ended, and the record if it ran."""

    ran: bool
    reason: str = ""  # why it did not run ("" when it ran)
    space: str = ""  # the space analysed
    native_space: str = ""  # the space the run was acquired in (when it ran)
    context: PreprocessingContext | None = None
    timings: dict[str, float] = field(default_factory=dict)  # step -> seconds
    motion_confounds: tuple[str, ...] = ()  # motion columns added to the design


@dataclass(frozen=True)
class DMNAnalysis:
    """The DMN chapter: the analysis of the main contrast and the primary threshold its counts use."""

    result: DMNResult
    contrast_name: str
    threshold: ThresholdResult
    overlaps: tuple[ThresholdOverlap, ...] = ()

    @property
    def threshold_key(self) -> str:
        return self.threshold.key

    @property
    def threshold_label(self) -> str:
        return self.threshold.label

    @property
    def threshold_text(self) -> str:
        return self.threshold.threshold_text

    @property
    def has_cutoff(self) -> bool:
        return self.threshold.has_cutoff


@dataclass(frozen=True)
class DMNOverlapSummary:
    """Without time series: the overlap of the map's thresholded voxels with the DMN, at every threshold."""

    available: bool
    source: str = ""
    reason: str = ""  # why not available
    threshold: ThresholdResult | None = None  # the primary threshold
    overlaps: tuple[ThresholdOverlap, ...] = ()

    @property
    def primary(self) -> ThresholdOverlap | None:
        return next((o for o in self.overlaps if self.threshold is not None and o.key == self.threshold.key), None)

    @property
    def threshold_label(self) -> str:
        return self.threshold.label if self.threshold else ""

    @property
    def threshold_text(self) -> str:
        return self.threshold.threshold_text if self.threshold else ""

    @property
    def has_cutoff(self) -> bool:
        return bool(self.threshold and self.threshold.has_cutoff)

    @property
    def n_dmn(self) -> int:
        return self.primary.n_dmn if self.primary else 0

    @property
    def n_below(self) -> int:
        return self.primary.n_below if self.primary else 0

    @property
    def n_overlap(self) -> int:
        return self.primary.n_overlap if self.primary else 0

    @property
    def share_dmn_below(self) -> float | None:
        return self.primary.share_dmn_below if self.primary else None

    @property
    def share_below_in_dmn(self) -> float | None:
        return self.primary.share_below_in_dmn if self.primary else None


@dataclass(frozen=True)
class CalibrationResults:
    """Calibration of the main contrast's z map, and of the reference noise model when one was set."""

    contrast: str
    main: Calibration
    reference: Calibration | None = None


@dataclass(frozen=True)
class StatmapInfo:
    """A report from an existing statistical map: where it came from and how it was converted."""

    path: str
    stat: str  # "z" or "t"
    dof: float | None
    source: str
    coverage: float
    conversion: str


@dataclass(frozen=True)
class Results:
    """Everything the report shows, computed once by :func:`analysis.pipeline.run`."""

    __pydantic_config__ = JSON_CONFIG

    cache_key: str
    config: Config
    dataset: DatasetInfo
    model: ModelInfo | None  # None for a report from an existing statistical map
    contrasts: dict[str, ContrastResult]
    figures: dict[str, str]  # role -> path relative to the output folder
    versions: dict[str, str]
    atlas: AtlasInfo = field(default_factory=AtlasInfo)
    rft: RFTInference | None = None  # random-field inference; None with the reason in rft_reason
    rft_reason: str = ""
    preprocessing: Preprocessing | None = None  # None for a report from a statistical map
    dmn: DMNAnalysis | None = None  # None when switched off (dmn.enabled = false) or from a statistical map
    dmn_overlap: DMNOverlapSummary | None = None  # from a statistical map (no time series)
    calibration: CalibrationResults | None = None  # None when switched off
    statmap: StatmapInfo | None = None
    entities: dict[str, str] = field(default_factory=dict)  # BIDS entities of every output: sub, ses, task, run
    files: dict[str, str] = field(default_factory=dict)  # role -> derivative of the run (mean image, DMN mask ...)
    figures_code: str = ""  # analysis.cache.figures_fingerprint of the code that drew the figures
    output_dir: Annotated[str, Field(exclude=True)] = "."  # where the files are; not part of the JSON

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
    def to_json(self) -> str:
        """The whole tree as JSON (:mod:`analysis.serial`); the same results give the same bytes."""
        return serial.to_json(self)

    @classmethod
    def from_json(cls, path: str | Path, output_dir: str | Path | None = None) -> "Results":
        """Read ``results/results.json``; files are then found under ``output_dir`` (default: its grandparent)."""
        path = Path(path)
        return cls.from_text(path.read_bytes(), output_dir if output_dir is not None else path.parent.parent)

    @classmethod
    def from_text(cls, text: str | bytes, output_dir: str | Path = ".") -> "Results":
        """The typed tree from :meth:`to_json`'s text."""
        import dataclasses

        return dataclasses.replace(serial.from_json(cls, text), output_dir=str(output_dir))
