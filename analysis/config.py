"""One configuration file for the whole analysis, validated on load.

Keys use nilearn's parameter names (``t_r``, ``hrf_model``, ``noise_model``,
``smoothing_fwhm``, ``alpha``, ``height_control``, ``cluster_threshold``,
``two_sided``) so values pass straight to nilearn.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["config_path", "read_toml", "ConfigError", "DataConfig", "BIDSConfig", "StatMapConfig", "GLMConfig", "InferenceConfig", "OutputConfig",
           "SimulationConfig", "CalibrationConfig", "DMNConfig", "PreprocessingConfig", "Config", "load_config", "DEFAULT_CONFIG_PATH"]

DEFAULT_CONFIG_PATH = Path("analysis.toml")

DATASETS = ("spm_auditory", "simulated", "bids", "statmap")
HRF_MODELS = ("spm", "spm + derivative", "spm + derivative + dispersion", "glover",
              "glover + derivative", "glover + derivative + dispersion")
DRIFT_MODELS = ("cosine", "polynomial", "none")
PRIMARY_THRESHOLDS = ("z3", "fpr", "fdr", "fdr_cluster", "bonferroni", "cluster_fwe")
#: The 13 named networks of Seitzman et al. (2020), as nilearn's ``fetch_coords_seitzman_2018`` labels them.
SEITZMAN_NETWORKS = ("Auditory", "CinguloOpercular", "DefaultMode", "DorsalAttention", "FrontoParietal",
                     "MedialTemporalLobe", "ParietoMedial", "Reward", "Salience", "SomatomotorDorsal",
                     "SomatomotorLateral", "VentralAttention", "Visual")


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key and the fix."""


@dataclass(frozen=True)
class DataConfig:
    """Which dataset to analyse and where nilearn keeps its data."""

    dataset: str = "spm_auditory"
    data_dir: str = ""  # "" -> NILEARN_DATA or nilearn's default folder
    fallback_to_simulated: bool = True
    seed: int = 0

    def __post_init__(self):
        _choice("data.dataset", self.dataset, DATASETS)


@dataclass(frozen=True)
class BIDSConfig:
    """A single-subject, single-run BIDS task dataset (``data.dataset = "bids"``)."""

    root: str = ""  # the BIDS dataset folder
    subject: str = ""  # label without "sub-"
    task: str = ""  # label without "task-"
    session: str = ""  # label without "ses-" ("" = none or the only one)
    run: str = ""  # label without "run-" ("" = the only run)
    space: str = ""  # "" = raw images (native space); e.g. "MNI152NLin2009cAsym" = fMRIPrep's preprocessed run
    raw_space: str = ""  # space of the raw run: "" = detect (affine, brain coverage), "native", or an MNI space name
    derivatives: str = ""  # fMRIPrep folder ("" = <root>/derivatives/fmriprep)
    confounds: tuple[str, ...] = ()  # fMRIPrep confound columns to add to the design, e.g. ["trans_x", ...]

    def __post_init__(self):
        for key in ("subject", "task", "session", "run", "space"):
            value = getattr(self, key)
            if value and not re.fullmatch(r"[A-Za-z0-9]+", value):
                raise ConfigError(f"bids.{key} = {value!r} is not a BIDS label; use letters and digits only, "
                                  f"without the '{key[:3] if key != 'session' else 'ses'}-' prefix")
        for c in self.confounds:
            if not re.fullmatch(r"[A-Za-z0-9_]+", c):
                raise ConfigError(f"bids.confounds: {c!r} is not an fMRIPrep confound column name")
        if self.raw_space and self.raw_space != "native" and not self.raw_space.upper().startswith("MNI"):
            raise ConfigError(f"bids.raw_space = {self.raw_space!r}; use \"\" (detect), \"native\" or an MNI space "
                              "name such as \"MNI152NLin2009cAsym\"")


@dataclass(frozen=True)
class StatMapConfig:
    """A report from an existing statistical map (``data.dataset = "statmap"``): no time series."""

    path: str = ""  # e.g. spmT_0001.nii, zstat1.nii.gz, a nilearn z map
    stat: str = "z"  # "z" or "t"
    dof: float = 0.0  # degrees of freedom of a t map
    contrast: str = "listening"  # name of the contrast the map shows
    direction: str = ""  # what positive values mean, e.g. "listening > rest" ("" = "<contrast> > baseline")
    source: str = ""  # where the map came from, for the report (e.g. "FSL FEAT 6.0, first level, sub-01")
    space: str = "MNI152NLin2009cAsym"  # must be an MNI space: atlas labels and DMN masks are in MNI
    # smoothness for random-field inference (a map has no residuals); at most one; none = RFT not available
    fwhm: float = 0.0  # mm FWHM of the map's smoothness (0 = not given)
    rpv: str = ""  # SPM's resels-per-voxel image (RPV.nii), on the map's grid
    smoothness_file: str = ""  # FSL's smoothness file (stats/smoothness of a FEAT directory)

    def __post_init__(self):
        _choice("statmap.stat", self.stat, ("z", "t"))
        _range("statmap.dof", self.dof, 0, 1e6)
        _range("statmap.fwhm", self.fwhm, 0, 100)
        if sum(bool(v) for v in (self.fwhm, self.rpv, self.smoothness_file)) > 1:
            raise ConfigError("statmap: give the smoothness once: statmap.fwhm, statmap.rpv or "
                              "statmap.smoothness_file")


@dataclass(frozen=True)
class SimulationConfig:
    """Parameters of the simulated listen-vs-rest dataset (ground truth is known)."""

    auditory_psc: float = 2.0
    dmn_psc: float = -0.8
    rho: float = 0.3
    tsnr_gm: float = 80.0

    def __post_init__(self):
        _range("simulation.auditory_psc", self.auditory_psc, -20, 20)
        _range("simulation.dmn_psc", self.dmn_psc, -20, 20)
        _range("simulation.rho", self.rho, 0, 0.95)
        _range("simulation.tsnr_gm", self.tsnr_gm, 1, 10_000)


@dataclass(frozen=True)
class GLMConfig:
    """First-level model settings, named as in nilearn's ``FirstLevelModel``."""

    t_r: float = 0.0  # s; 0 = from the data (BIDS sidecar, fetcher or image header); else must agree with it
    hrf_model: str = "spm"
    noise_model: str = "ar1_bc"  # calibrated AR(1); "ar1" is nilearn's reference (z inflated on short runs)
    rho_fwhm: float = 15.0  # mm, spatial smoothing of the AR(1) coefficient for "ar1_bc"
    drift_model: str = "cosine"
    high_pass: float = 0.01
    smoothing_fwhm: float = 0.0  # 0 -> no smoothing
    standardize: bool = False
    signal_scaling: int = 0  # 0 -> each voxel scaled by its mean: effects in % signal change
    n_jobs: int = 1

    def __post_init__(self):
        if self.t_r != 0:
            _range("glm.t_r", self.t_r, 0.1, 60)
        _choice("glm.hrf_model", self.hrf_model, HRF_MODELS)
        _choice("glm.drift_model", self.drift_model, DRIFT_MODELS)
        _range("glm.high_pass", self.high_pass, 0, 1)
        _range("glm.smoothing_fwhm", self.smoothing_fwhm, 0, 30)
        _choice("glm.signal_scaling", self.signal_scaling, (0, 1, False))
        _range("glm.n_jobs", self.n_jobs, -1, 64)
        from .noise import NOISE_MODELS

        _choice("glm.noise_model", self.noise_model, tuple(NOISE_MODELS))
        _range("glm.rho_fwhm", self.rho_fwhm, 0, 50)


@dataclass(frozen=True)
class InferenceConfig:
    """Thresholds; the seed notebook's five are all computed, ``primary`` drives the prose."""

    alpha: float = 0.05  # FDR q and Bonferroni FWE level
    fpr_alpha: float = 0.001  # uncorrected voxel-wise p
    z_threshold: float = 3.0  # the seed's fixed z cut-off
    cluster_threshold: int = 10  # minimum cluster size (voxels) for the FDR + extent map
    two_sided: bool = True
    primary: str = "fdr_cluster"  # drives the cluster tables, glass brain and prose
    min_distance: float = 8.0  # mm between sub-peaks in cluster tables
    cdt_alpha: float = 0.001  # cluster-forming threshold (p, uncorrected) of the cluster-level FWE map
    smoothness_method: str = "spm"  # random-field smoothness estimator: "spm" (spm_est_smoothness) or "gaussian" (FSL)

    def __post_init__(self):
        from .rft import SMOOTHNESS_METHODS

        _range("inference.cdt_alpha", self.cdt_alpha, 1e-12, 0.05, open_low=True)
        _choice("inference.smoothness_method", self.smoothness_method, SMOOTHNESS_METHODS)
        _range("inference.alpha", self.alpha, 1e-12, 0.5, open_low=True)
        _range("inference.fpr_alpha", self.fpr_alpha, 1e-12, 0.5, open_low=True)
        _range("inference.z_threshold", self.z_threshold, 0.5, 20)
        _range("inference.cluster_threshold", self.cluster_threshold, 0, 100_000)
        _choice("inference.primary", self.primary, PRIMARY_THRESHOLDS)
        _range("inference.min_distance", self.min_distance, 0, 100)


@dataclass(frozen=True)
class CalibrationConfig:
    """The check that null z values are standard normal (empirical null and null designs)."""

    enabled: bool = True
    n_null: int = 6  # null designs: the task blocks put in another order (nearly orthogonal designs)
    tolerance: float = 0.1  # empirical-null SD must lie in 1 +- tolerance (mean in 0 +- tolerance)
    reference_model: str = "ar1"  # also calibrate this noise model for comparison ("" = skip)
    reference_n_null: int = 2

    def __post_init__(self):
        _range("calibration.n_null", self.n_null, 0, 50)
        _range("calibration.tolerance", self.tolerance, 0.001, 1)
        _range("calibration.reference_n_null", self.reference_n_null, 0, 50)
        if self.reference_model:
            from .noise import NOISE_MODELS

            _choice("calibration.reference_model", self.reference_model, tuple(NOISE_MODELS))


@dataclass(frozen=True)
class PreprocessingConfig:
    """Realignment, coregistration, normalisation to MNI152 and smoothing of native-space runs (ANTs)."""

    mode: str = "auto"  # "auto": run for native-space data; "on": always; "off": never
    smoothing_fwhm: float = 6.0  # mm, applied after normalisation (then keep glm.smoothing_fwhm = 0)
    normalisation: str = "Affine"  # "Affine", "SyN" or "Rigid" (anatomical -> MNI152)
    motion_confounds: str = "6+derivatives"  # "none", "6" or "6+derivatives" motion regressors in the GLM
    realign_reference: str = "mean"  # "mean" (two-pass), "first" or "middle"

    def __post_init__(self):
        _choice("preprocessing.mode", self.mode, ("auto", "on", "off"))
        _range("preprocessing.smoothing_fwhm", self.smoothing_fwhm, 0, 30)
        _choice("preprocessing.normalisation", self.normalisation, ("Affine", "SyN", "Rigid"))
        _choice("preprocessing.motion_confounds", self.motion_confounds, ("none", "6", "6+derivatives"))
        _choice("preprocessing.realign_reference", self.realign_reference, ("mean", "first", "middle"))


@dataclass(frozen=True)
class DMNConfig:
    """The Default Mode Network analysis (Yeo 2011 network, Seitzman 2020 nodes, Schaefer 2018 parcels)."""

    enabled: bool = True
    node_radius: float = 6.0  # mm, spheres around the Seitzman DefaultMode / Auditory coordinates
    seed_radius: float = 8.0  # mm, posterior-cingulate seed for the seed-based map
    seed_map: bool = True
    # positive control: a Seitzman (2020) network expected to respond to the contrast, "none", or "auto"
    # (Auditory for the listening task of the SPM auditory / simulated data, none for other data)
    control_network: str = "auto"

    def __post_init__(self):
        _range("dmn.node_radius", self.node_radius, 1, 20)
        _range("dmn.seed_radius", self.seed_radius, 1, 20)
        _choice("dmn.control_network", self.control_network,
                ("auto", "none") + tuple(n for n in SEITZMAN_NETWORKS if n != "DefaultMode"))


@dataclass(frozen=True)
class OutputConfig:
    """Where generated files go (relative paths are relative to the project folder)."""

    dir: str = "."
    cache_dir: str = ".cache"


@dataclass(frozen=True)
class Config:
    """The whole analysis configuration (immutable)."""

    data: DataConfig = field(default_factory=DataConfig)
    bids: BIDSConfig = field(default_factory=BIDSConfig)
    statmap: StatMapConfig = field(default_factory=StatMapConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    preprocessing: PreprocessingConfig = field(default_factory=PreprocessingConfig)
    glm: GLMConfig = field(default_factory=GLMConfig)
    contrasts: dict[str, str] = field(default_factory=lambda: {"listening": "listening"})
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    dmn: DMNConfig = field(default_factory=DMNConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    source: str = ""  # the file this came from, for error messages

    def __post_init__(self):
        if not self.contrasts:
            raise ConfigError(f"{self.source or 'config'}: [contrasts] is empty; add e.g. listening = \"listening\"")
        from .contrasts import ContrastError, check_syntax, entity

        seen: dict[str, str] = {}
        for name, expr in self.contrasts.items():
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name) or len(name) > 64:
                raise ConfigError(f"{self.source or 'config'}: contrast name {name!r} must start with a letter "
                                  "and hold only letters, digits and '_' (at most 64)")
            if not isinstance(expr, str) or not expr.strip():
                raise ConfigError(f"{self.source or 'config'}: contrast {name!r} is empty; write it by condition "
                                  "name, e.g. \"listening\"")
            try:
                check_syntax(expr, name)
            except ContrastError as exc:
                raise ConfigError(f"{self.source or 'config'}: [contrasts] {exc}") from None
            ent = entity(name)
            if ent.lower() in seen:
                raise ConfigError(f"{self.source or 'config'}: contrasts {seen[ent.lower()]!r} and {name!r} would "
                                  f"both be saved as contrast-{ent}; rename one of them")
            seen[ent.lower()] = name

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (no ``source``), stable for hashing and JSON."""
        d = asdict(self)
        d.pop("source")
        return json.loads(json.dumps(d))  # tuples -> lists, exactly as read back from JSON/TOML

    def canonical_json(self) -> str:
        """Sorted, compact JSON of :meth:`to_dict`; the cache key is built from it."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "Config":
        """Build and validate a Config from a nested dict (as read from TOML)."""
        try:
            return _build(cls, data, source, prefix="")
        except ConfigError as exc:
            msg = str(exc)
            raise ConfigError(msg if msg.startswith(source) else f"{source}: {msg}") from None

    def replace(self, **sections) -> "Config":
        """Return a copy with whole sections or nested keys replaced, e.g. ``replace(glm={"noise_model": "ols"})``."""
        d = self.to_dict()
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(d.get(key), dict) and key != "contrasts":
                d[key] = {**d[key], **value}
            else:
                d[key] = value
        return Config.from_dict(d, source=self.source or "config")


def config_path(path: str | Path | None = None) -> Path | None:
    """The config file to read: ``path``, else ``$ANALYSIS_CONFIG``, else ``analysis.toml`` if it exists."""
    if path is None and os.environ.get("ANALYSIS_CONFIG"):
        path = os.environ["ANALYSIS_CONFIG"]
    if path is None:
        return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None
    return Path(path)


def read_toml(path: Path, error: type[Exception] = ValueError) -> dict[str, Any]:
    """Parse a TOML file; a missing file or bad syntax raises ``error`` with a one-line message."""
    if not path.exists():
        raise error(f"{path}: config file not found; pass an existing TOML file or omit it for the defaults")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid TOML ({exc}); fix the syntax") from None


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate a TOML config file.

    Parameters
    ----------
    path : str or Path, optional
        Defaults to the file named by the ``ANALYSIS_CONFIG`` environment variable, else
        ``analysis.toml`` in the current folder; a missing default file gives the built-in defaults.

    Returns
    -------
    Config

    Raises
    ------
    ConfigError
        One line naming the file, the key and the fix.
    """
    path = config_path(path)
    if path is None:
        return Config(source="defaults")
    data = read_toml(path, ConfigError)
    return Config.from_dict(data, source=str(path))


# --------------------------------------------------------------------------- helpers

def _build(cls, data, source, prefix):
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: [{prefix.rstrip('.')}] must be a table")
    known = {f.name: f for f in fields(cls) if not (cls is Config and f.name == "source")}
    kwargs = {}
    for key, value in data.items():
        if cls is Config and key == "report":  # title page metadata: read by analysis.metadata, not a cache input
            continue
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
            hint = f"did you mean '{prefix}{close[0]}'?" if close else f"valid keys: {', '.join(known)}"
            raise ConfigError(f"{source}: unknown key '{prefix}{key}'; {hint}")
        f = known[key]
        sub = _SECTIONS.get(f.name) if cls is Config else None
        if sub is not None:
            kwargs[key] = _build(sub, value, source, prefix=f"{key}.")
        elif cls is Config and key == "contrasts":
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise ConfigError(f"{source}: [contrasts] must map names to expressions, e.g. listening = \"listening\"")
            kwargs[key] = dict(value)
        else:
            kwargs[key] = _coerce(f"{prefix}{key}", value, f.default, source)
    if cls is Config:
        kwargs["source"] = source
    return cls(**kwargs)


def _coerce(key, value, default, source):
    expected = type(default)
    if expected is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false, not {value!r}")
        return value
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key} must be a whole number, not {value!r}")
        return value
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {key} must be a number, not {value!r}")
        return float(value)
    if expected is str and not isinstance(value, str):
        raise ConfigError(f"{source}: {key} must be a string, not {value!r}")
    if expected is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{source}: {key} must be a list of strings, e.g. [\"trans_x\", \"trans_y\"]")
        return tuple(value)
    return value


def _choice(key, value, choices):
    if value not in choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"{key} = {value!r} is not valid; {hint}choose one of {', '.join(map(repr, choices))}")


def _range(key, value, low, high, open_low=False):
    ok = (low < value <= high) if open_low else (low <= value <= high)  # False for NaN
    if not ok:
        bracket = "(" if open_low else "["
        raise ConfigError(f"{key} = {value!r} is out of range; use a value in {bracket}{low}, {high}]")


_SECTIONS = {"data": DataConfig, "bids": BIDSConfig, "statmap": StatMapConfig, "simulation": SimulationConfig, "preprocessing": PreprocessingConfig, "glm": GLMConfig,
             "inference": InferenceConfig, "calibration": CalibrationConfig,
             "dmn": DMNConfig, "output": OutputConfig}
