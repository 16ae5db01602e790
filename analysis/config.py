"""One configuration file for the whole analysis, validated on load.

Keys use nilearn's parameter names (``t_r``, ``hrf_model``, ``noise_model``,
``smoothing_fwhm``, ``alpha``, ``height_control``, ``cluster_threshold``,
``two_sided``) so values pass straight to nilearn.

Every section is a frozen, strict pydantic model (``extra="forbid"``): a string where a number is expected,
an unknown key or a value out of range is refused, and :func:`describe_validation_error` turns pydantic's
report into one line naming the file, the key and the fix (unknown keys get the closest valid name).
Serialise with ``config.model_dump(mode="json")`` and read back with ``Config.model_validate(data)``
(or :func:`validate_config`, which raises :class:`ConfigError` instead of pydantic's ``ValidationError``).
"""

from __future__ import annotations

import difflib
import json
import math
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, StrictStr, ValidationError, ValidationInfo,
                      field_validator, model_validator)

from .configfile import (DATASETS, DEFAULT_CACHE_DIR, DEFAULT_CONFIG_PATH, DEFAULT_OUTPUT_DIR, config_path,
                         read_toml)

__all__ = ["config_path", "read_toml", "read_config_file", "validate_config", "describe_validation_error",
           "ConfigError", "DataConfig", "BIDSConfig", "StatMapConfig", "GLMConfig", "InferenceConfig", "OutputConfig",
           "SimulationConfig", "CalibrationConfig", "DMNConfig", "PreprocessingConfig", "StudyConfig", "Config",
           "load_config",
           "DEFAULT_CONFIG_PATH", "DATASETS", "SEITZMAN_NETWORKS"]

Dataset = Literal[DATASETS]
HRFModel = Literal["spm", "spm + derivative", "spm + derivative + dispersion", "glover",
                   "glover + derivative", "glover + derivative + dispersion"]
DriftModel = Literal["cosine", "polynomial", "none"]
#: the keys of :data:`analysis.noise.NOISE_MODELS` (written out: that module imports numpy; a test keeps them equal)
NoiseModelName = Literal["ols", "ar1", "ar1_bc", "ar1_pooled"]
#: :data:`analysis.rft.SMOOTHNESS_METHODS` (a test keeps them equal)
SmoothnessMethod = Literal["spm", "gaussian"]
PrimaryThreshold = Literal["z3", "fpr", "fdr", "fdr_cluster", "bonferroni", "cluster_fwe"]
#: The 13 named networks of Seitzman et al. (2020), as nilearn's ``fetch_coords_seitzman_2018`` labels them.
SEITZMAN_NETWORKS = ("Auditory", "CinguloOpercular", "DefaultMode", "DorsalAttention", "FrontoParietal",
                     "MedialTemporalLobe", "ParietoMedial", "Reward", "Salience", "SomatomotorDorsal",
                     "SomatomotorLateral", "VentralAttention", "Visual")
ControlNetwork = Literal[("auto", "none") + tuple(n for n in SEITZMAN_NETWORKS if n != "DefaultMode")]
ReferenceModel = Literal[typing.get_args(NoiseModelName) + ("",)]  # "" = no reference calibration

HRF_MODELS = typing.get_args(HRFModel)
DRIFT_MODELS = typing.get_args(DriftModel)
PRIMARY_THRESHOLDS = typing.get_args(PrimaryThreshold)

#: a list of strings in TOML (a tuple here): the container accepts a list, every item must be a string
Strings = Annotated[tuple[StrictStr, ...], Field(strict=False)]

_BIDS_LABEL = re.compile(r"[A-Za-z0-9]+")


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the file, the key and the fix."""


class Section(BaseModel):
    """A table of the config file: immutable, strict types (an int is accepted for a float), no unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class DataConfig(Section):
    """Which dataset to analyse and where nilearn keeps its data."""

    dataset: Dataset = "spm_auditory"
    data_dir: str = ""  # "" -> NILEARN_DATA or nilearn's default folder
    fallback_to_simulated: bool = True
    seed: int = Field(0, ge=0)


class BIDSConfig(Section):
    """A single-subject, single-run BIDS task dataset (``data.dataset = "bids"``)."""

    root: str = ""  # the BIDS dataset folder
    subject: str = ""  # label without "sub-"
    task: str = ""  # label without "task-"
    session: str = ""  # label without "ses-" ("" = none or the only one)
    run: str = ""  # label without "run-" ("" = the only run)
    space: str = ""  # "" = raw images (native space); e.g. "MNI152NLin2009cAsym" = fMRIPrep's preprocessed run
    raw_space: str = ""  # space of the raw run: "" = detect (affine, brain coverage), "native", or an MNI space name
    derivatives: str = ""  # fMRIPrep folder ("" = <root>/derivatives/fmriprep)
    # fMRIPrep confound columns to add to the design
    confounds: Strings = Field((), examples=[["trans_x", "trans_y"]])

    @field_validator("subject", "task", "session", "run", "space")
    @classmethod
    def _label(cls, value: str, info: ValidationInfo) -> str:
        if value and not _BIDS_LABEL.fullmatch(value):
            prefix = "ses" if info.field_name == "session" else info.field_name[:3]
            raise ValueError(f"bids.{info.field_name} = {value!r} is not a BIDS label; use letters and digits only, "
                             f"without the '{prefix}-' prefix")
        return value

    @field_validator("confounds")
    @classmethod
    def _confounds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for c in value:
            if not re.fullmatch(r"[A-Za-z0-9_]+", c):
                raise ValueError(f"bids.confounds: {c!r} is not an fMRIPrep confound column name; use the column "
                                 "names of the desc-confounds_timeseries.tsv file, e.g. \"trans_x\"")
        return value

    @field_validator("raw_space")
    @classmethod
    def _raw_space(cls, value: str) -> str:
        if value and value != "native" and not value.upper().startswith("MNI"):
            raise ValueError(f"bids.raw_space = {value!r} is not valid; use \"\" (detect), \"native\" or an MNI "
                             "space name such as \"MNI152NLin2009cAsym\"")
        return value


class StatMapConfig(Section):
    """A report from an existing statistical map (``data.dataset = "statmap"``): no time series."""

    path: str = ""  # e.g. spmT_0001.nii, zstat1.nii.gz, a nilearn z map
    stat: Literal["z", "t"] = "z"
    dof: float = Field(0.0, ge=0, le=1e6)  # degrees of freedom of a t map
    contrast: str = "listening"  # name of the contrast the map shows
    direction: str = ""  # what positive values mean, e.g. "listening > rest" ("" = "<contrast> > baseline")
    source: str = ""  # where the map came from, for the report (e.g. "FSL FEAT 6.0, first level, sub-01")
    space: str = "MNI152NLin2009cAsym"  # must be an MNI space: atlas labels and DMN masks are in MNI
    # smoothness for random-field inference (a map has no residuals); at most one; none = RFT not available
    fwhm: float = Field(0.0, ge=0, le=100)  # mm FWHM of the map's smoothness (0 = not given)
    rpv: str = ""  # SPM's resels-per-voxel image (RPV.nii), on the map's grid
    smoothness_file: str = ""  # FSL's smoothness file (stats/smoothness of a FEAT directory)

    @model_validator(mode="after")
    def _one_smoothness(self) -> "StatMapConfig":
        if sum(bool(v) for v in (self.fwhm, self.rpv, self.smoothness_file)) > 1:
            raise ValueError("statmap: give the smoothness once: statmap.fwhm, statmap.rpv or "
                             "statmap.smoothness_file")
        return self


class SimulationConfig(Section):
    """Parameters of the simulated listen-vs-rest dataset (ground truth is known)."""

    auditory_psc: float = Field(2.0, ge=-20, le=20)
    dmn_psc: float = Field(-0.8, ge=-20, le=20)
    rho: float = Field(0.3, ge=0, le=0.95)
    tsnr_gm: float = Field(80.0, ge=1, le=10_000)


class GLMConfig(Section):
    """First-level model settings, named as in nilearn's ``FirstLevelModel``."""

    # s; 0 = from the data (BIDS sidecar, fetcher or image header); else in [0.1, 60] and must agree with the data
    t_r: float = Field(0.0, ge=0, le=60)
    hrf_model: HRFModel = "spm"
    noise_model: NoiseModelName = "ar1_bc"  # calibrated AR(1); "ar1" is nilearn's reference (z inflated on short runs)
    rho_fwhm: float = Field(15.0, ge=0, le=50)  # mm, spatial smoothing of the AR(1) coefficient for "ar1_bc"
    drift_model: DriftModel = "cosine"
    high_pass: float = Field(0.01, ge=0, le=1)
    smoothing_fwhm: float = Field(0.0, ge=0, le=30)  # 0 -> no smoothing
    standardize: bool = False
    signal_scaling: int = Field(0, ge=0, le=1)  # 0 -> each voxel scaled by its mean: effects in % signal change
    n_jobs: int = Field(1, ge=-1, le=64)

    @field_validator("t_r")
    @classmethod
    def _t_r(cls, value: float) -> float:
        if 0 < value < 0.1:
            raise ValueError(f"glm.t_r = {value!r} is out of range; use 0 (take it from the data) or a value in "
                             "[0.1, 60] seconds")
        return value


class InferenceConfig(Section):
    """Thresholds; the seed notebook's five are all computed, ``primary`` drives the prose."""

    alpha: float = Field(0.05, gt=1e-12, le=0.5)  # FDR q and Bonferroni FWE level
    fpr_alpha: float = Field(0.001, gt=1e-12, le=0.5)  # uncorrected voxel-wise p
    z_threshold: float = Field(3.0, ge=0.5, le=20)  # the seed's fixed z cut-off
    cluster_threshold: int = Field(10, ge=0, le=100_000)  # minimum cluster size (voxels) for the FDR + extent map
    two_sided: bool = True
    primary: PrimaryThreshold = "fdr_cluster"  # drives the cluster tables, glass brain and prose
    min_distance: float = Field(8.0, ge=0, le=100)  # mm between sub-peaks in cluster tables
    # cluster-forming threshold (p, uncorrected) of the cluster-level FWE map
    cdt_alpha: float = Field(0.001, gt=1e-12, le=0.05)
    smoothness_method: SmoothnessMethod = "spm"  # random-field smoothness: "spm" (spm_est_smoothness) or "gaussian"


class CalibrationConfig(Section):
    """The check that null z values are standard normal (empirical null and null designs)."""

    enabled: bool = True
    n_null: int = Field(6, ge=0, le=50)  # null designs: the task blocks put in another order
    tolerance: float = Field(0.1, ge=0.001, le=1)  # empirical-null SD must lie in 1 +- tolerance
    reference_model: ReferenceModel = "ar1"  # also calibrate this noise model ("" = skip)
    reference_n_null: int = Field(2, ge=0, le=50)


class PreprocessingConfig(Section):
    """Realignment, coregistration, normalisation to MNI152 and smoothing of native-space runs (ANTs)."""

    mode: Literal["auto", "on", "off"] = "auto"  # "auto": run for native-space data; "on": always; "off": never
    smoothing_fwhm: float = Field(6.0, ge=0, le=30)  # mm, applied after normalisation (then glm.smoothing_fwhm = 0)
    normalisation: Literal["Affine", "SyN", "Rigid"] = "Affine"  # anatomical -> MNI152
    motion_confounds: Literal["none", "6", "6+derivatives"] = "6+derivatives"  # motion regressors in the GLM
    realign_reference: Literal["mean", "first", "middle"] = "mean"  # "mean" (two-pass), "first" or "middle"


class DMNConfig(Section):
    """The Default Mode Network analysis (Yeo 2011 network, Seitzman 2020 nodes, Schaefer 2018 parcels)."""

    enabled: bool = True
    node_radius: float = Field(6.0, ge=1, le=20)  # mm, spheres around the Seitzman DefaultMode / Auditory coordinates
    seed_radius: float = Field(8.0, ge=1, le=20)  # mm, posterior-cingulate seed for the seed-based map
    seed_map: bool = True
    # positive control: a Seitzman (2020) network expected to respond to the contrast, "none", or "auto"
    # (Auditory for the listening task of the SPM auditory / simulated data, none for other data)
    control_network: ControlNetwork = "auto"


class OutputConfig(Section):
    """Where generated files go (relative paths are relative to the project folder)."""

    dir: str = DEFAULT_OUTPUT_DIR
    cache_dir: str = DEFAULT_CACHE_DIR
    figures: bool = True  # draw the report's figures (a study's runs leave them to the study report)


class StudyConfig(Section):
    """A whole study (``fmri-report study``, :mod:`analysis.study`): every subject's runs, then the group level.

    The runs come from ``[bids]`` (``root``, ``task``, ``space``, ``confounds``); ``bids.subject`` and ``bids.run``
    are set per task. Group contrasts are written by design-column name like first-level ones: ``intercept`` and
    the ``covariates`` (a numeric column of ``participants.tsv`` is centred; a categorical one becomes one centred
    indicator column per level but the first, e.g. ``sex_M``).
    """

    subjects: Literal["all"] | Strings = "all"  # labels without "sub-", or "all"
    contrast: str = ""  # the first-level contrast taken to the group ("" = the first of [contrasts])
    dir: str = "study"  # study outputs, relative to output.dir
    scheduler: str = ""  # address of a running Dask scheduler, e.g. "tcp://10.0.0.5:8786" ("" = a LocalCluster)
    n_workers: int = Field(0, ge=0, le=4096)  # LocalCluster workers (0 = one per core)
    memory_limit: str = "4GiB"  # per LocalCluster worker, as Dask writes it ("4GiB", "2.5GB", "auto")
    retries: int = Field(2, ge=0, le=20)  # Dask retries of a subject whose task failed or whose worker died
    strict: bool = False  # a subject with bad input is an error (exit 2) instead of being left out
    covariates: Strings = Field((), examples=[["age", "sex"]])  # participants.tsv columns in the group design
    contrasts: dict[str, str] = Field(default_factory=lambda: {"mean": "intercept"},
                                      examples=[{"mean": "intercept", "age": "age"}])
    smoothing_fwhm: float = Field(0.0, ge=0, le=30)  # mm, applied to the subject maps by SecondLevelModel
    n_perm: int = Field(1000, ge=0, le=100_000)  # permutations (sign flips) of the non-parametric test; 0 = none
    tfce: bool = False  # TFCE in the permutation test too (when nilearn has it; ~1.5 s per permutation at 70,000 voxels)
    random_state: int = Field(0, ge=0)  # seed of the permutations
    # the simulated study (--dataset simulated-study) only
    n_subjects: int = Field(8, ge=2, le=200)
    n_runs: int = Field(2, ge=1, le=10)

    @field_validator("subjects", mode="before")
    @classmethod
    def _subjects(cls, value: Any) -> Any:
        if isinstance(value, str) and value != "all":
            raise ValueError(f"study.subjects = {value!r} is not valid; write \"all\" or a list of labels, "
                             f"e.g. subjects = [\"{value.removeprefix('sub-')}\"]")
        if isinstance(value, (list, tuple)):
            if not value:
                raise ValueError("study.subjects is empty; write \"all\" or a list of labels, e.g. [\"01\", \"02\"]")
            for v in value:
                if not isinstance(v, str):
                    raise ValueError(f"study.subjects: {v!r} must be a string; write every label in quotes, "
                                     f"e.g. subjects = [\"{v}\"]")
                if not _BIDS_LABEL.fullmatch(v):
                    raise ValueError(f"study.subjects: {v!r} is not a BIDS label; use letters and digits only, "
                                     "without the 'sub-' prefix")
            if len(set(value)) != len(value):
                raise ValueError("study.subjects names a subject twice; list each once")
        return value

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, value: str) -> str:
        if value != "auto" and not re.fullmatch(r"\d+(\.\d+)?\s*([kKMGT]i?B|B)", value):
            raise ValueError(f"study.memory_limit = {value!r} is not a memory size; write e.g. \"4GiB\", "
                             "\"2.5GB\" or \"auto\"")
        return value

    @field_validator("covariates")
    @classmethod
    def _covariates(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for c in value:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", c) or c == "intercept":
                raise ValueError(f"study.covariates: {c!r} is not usable as a participants.tsv column name here; "
                                 "use a column whose name starts with a letter and holds letters, digits and '_'")
        if len(set(value)) != len(value):
            raise ValueError("study.covariates names a column twice; list each once")
        return value

    @field_validator("contrasts")
    @classmethod
    def _contrasts(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("[study.contrasts] is empty; add e.g. mean = \"intercept\"")
        from .contrasts import ContrastError, check_syntax, entity

        seen: dict[str, str] = {}
        for name, expr in value.items():
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name) or len(name) > 64:
                raise ValueError(f"group contrast name {name!r} must start with a letter and hold only letters, "
                                 "digits and '_' (at most 64); rename it")
            try:
                check_syntax(expr, name)
            except ContrastError as exc:
                raise ValueError(f"[study.contrasts] {exc}") from None
            ent = entity(name)
            if ent.lower() in seen:
                raise ValueError(f"group contrasts {seen[ent.lower()]!r} and {name!r} would both be saved as "
                                 f"contrast-{ent}; rename one of them")
            seen[ent.lower()] = name
        return value


class Config(Section):
    """The whole analysis configuration (immutable).

    ``source`` (the file it came from, for error messages) is not a field: it is neither dumped nor compared, so
    ``Config.model_validate(config.model_dump(mode="json")) == config`` and :meth:`canonical_json` does not
    depend on where the file lives. Pass it as ``context={"source": ...}`` to ``model_validate``.
    """

    data: DataConfig = Field(default_factory=DataConfig)
    bids: BIDSConfig = Field(default_factory=BIDSConfig)
    statmap: StatMapConfig = Field(default_factory=StatMapConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    preprocessing: PreprocessingConfig = Field(default_factory=PreprocessingConfig)
    glm: GLMConfig = Field(default_factory=GLMConfig)
    contrasts: dict[str, str] = Field(default_factory=lambda: {"listening": "listening"},
                                      examples=[{"listening": "listening"}])
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    dmn: DMNConfig = Field(default_factory=DMNConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    study: StudyConfig = Field(default_factory=StudyConfig)

    _source: str = PrivateAttr("")

    @property
    def source(self) -> str:
        """The file this config came from (``"defaults"`` without one, ``""`` when built in code)."""
        return self._source

    @field_validator("contrasts")
    @classmethod
    def _contrasts(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("[contrasts] is empty; add e.g. listening = \"listening\"")
        from .contrasts import ContrastError, check_syntax, entity

        seen: dict[str, str] = {}
        for name, expr in value.items():
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name) or len(name) > 64:
                raise ValueError(f"contrast name {name!r} must start with a letter and hold only letters, digits "
                                 "and '_' (at most 64); rename it")
            if not expr.strip():
                raise ValueError(f"contrast {name!r} is empty; write it by condition name, e.g. \"listening\"")
            try:
                check_syntax(expr, name)
            except ContrastError as exc:
                raise ValueError(f"[contrasts] {exc}") from None
            ent = entity(name)
            if ent.lower() in seen:
                raise ValueError(f"contrasts {seen[ent.lower()]!r} and {name!r} would both be saved as "
                                 f"contrast-{ent}; rename one of them")
            seen[ent.lower()] = name
        return value

    @model_validator(mode="after")
    def _remember_source(self, info: ValidationInfo) -> "Config":
        if info.context and "source" in info.context:
            self._source = str(info.context["source"])
        return self

    def __eq__(self, other: object) -> bool:  # the values only: ``source`` says where they came from
        if not isinstance(other, Config):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in type(self).model_fields)

    __hash__ = None  # type: ignore[assignment]  # (``contrasts`` is a dict)

    def canonical_json(self) -> str:
        """Sorted, compact JSON of ``model_dump(mode="json")`` (no ``source``); the cache key is built from it."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def replace(self, **sections) -> "Config":
        """Return a validated copy with whole sections or nested keys replaced.

        Examples
        --------
        >>> Config().replace(glm={"noise_model": "ols"}).glm.noise_model
        'ols'
        """
        d = self.model_dump()
        for key, value in sections.items():
            if isinstance(value, Mapping) and isinstance(d.get(key), dict) and key != "contrasts":
                d[key] = {**d[key], **value}
            else:
                d[key] = value
        return validate_config(d, source=self.source or "config")


def read_config_file(path: str | Path | None = None,
                     error: type[Exception] = ConfigError) -> tuple[dict[str, Any], str]:
    """The config file parsed once: its tables (``{}`` without a file) and its name for messages.

    The analysis sections go to :func:`validate_config`, the ``[report]`` table to
    :func:`analysis.metadata.validate_report`; both read this one dict.
    """
    path = config_path(path)
    if path is None:
        return {}, "defaults"
    return read_toml(path, error), str(path)


def validate_config(data: Mapping[str, Any], source: str = "config") -> Config:
    """A :class:`Config` from parsed TOML (the ``[report]`` table is ignored: it is not an analysis input).

    Raises
    ------
    ConfigError
        One line: ``<source>: <key> ...; <fix>``.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the config must be a table of sections such as [glm]")
    tables = {k: v for k, v in data.items() if k != "report"}
    try:
        return Config.model_validate(tables, context={"source": source})
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, source, Config, also_known=("report",))) from None


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
    return validate_config(*read_config_file(path))


# --------------------------------------------------------------------------- pydantic errors -> one line

_NUMBER = {"float_type", "float_parsing", "finite_number"}
_WHOLE = {"int_type", "int_parsing", "int_from_float"}
_BOOL = {"bool_type", "bool_parsing"}
_RANGE = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
_TABLE = {"dict_type", "model_type", "model_attributes_type"}


def describe_validation_error(exc: ValidationError, source: str, model: type[BaseModel], prefix: str = "",
                              also_known: tuple[str, ...] = ()) -> str:
    """The first error of a pydantic ``ValidationError`` as one line: ``<source>: <key> ...; <fix>``.

    Parameters
    ----------
    exc : pydantic.ValidationError
    source : str
        The file the values came from.
    model : type
        The model that was validated (to look up valid keys, bounds and choices).
    prefix : str
        Prepended to every key, e.g. ``"report."`` for a table validated on its own.
    also_known : tuple of str
        Keys valid at the top level although ``model`` does not hold them (suggested for typos).
    """
    err = exc.errors(include_url=False)[0]
    return f"{source}: {_describe(err, model, prefix, also_known)}"


def _describe(err: dict, model: type[BaseModel], prefix: str, also_known: tuple[str, ...]) -> str:
    kind, loc, value = err["type"], tuple(err["loc"]), err.get("input")
    key = (prefix + ".".join(str(p) for p in loc if not isinstance(p, int))).rstrip(".")
    name = next((str(p) for p in reversed(loc) if not isinstance(p, int)), key)
    parent_model, info = _lookup(model, loc)
    if kind in ("value_error", "assertion_error"):
        message = str(err.get("ctx", {}).get("error", err["msg"]))
        return message.splitlines()[0] if message else f"{key}: {err['msg']}"
    if kind == "extra_forbidden":
        known = list(parent_model.model_fields) if parent_model else []
        if parent_model is model:
            known += list(also_known)
        where = key.rsplit(".", 1)[0] + "." if "." in key else ""
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f"did you mean '{where}{close[0]}'?" if close else f"valid keys: {', '.join(known)}"
        return f"unknown key '{key}'; {hint}"
    if kind == "missing":
        table = key.rsplit(".", 1)[0] if "." in key else "the config"
        entry = f"every [[{table}]] entry" if any(isinstance(p, int) for p in loc) else f"[{table}]"
        return f"{entry} needs {name} = \"...\"; add it"
    if kind in _RANGE or (kind == "literal_error" and info is None):
        low, high, open_low, open_high = _bounds(info)
        return f"{key} = {_show(value)} is out of range; use a value {_interval(low, high, open_low, open_high)}"
    if kind == "literal_error":
        choices = _choices(info.annotation)
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"{key} = {_show(value)} is not valid; {hint}choose one of {', '.join(map(repr, choices))}"
    if kind in _NUMBER:
        return f"{key} must be a number, not {_show(value)}; {_number_fix(name, value, info)}"
    if kind in _WHOLE:
        return f"{key} must be a whole number, not {_show(value)}; {_number_fix(name, value, info, whole=True)}"
    if kind in _BOOL:
        return f"{key} must be true or false, not {_show(value)}; write true or false, without quotes"
    if kind == "string_type":
        if loc and isinstance(loc[-1], int):
            return (f"{key}: entry {loc[-1] + 1} must be a string, not {_show(value)}; write every entry in quotes, "
                    f"e.g. {name} = {_example(info)}")
        if key.startswith("contrasts."):
            return (f"{key} must be a string, not {_show(value)}; write the contrast by condition name, "
                    f"e.g. {name} = \"listening\"")
        return f"{key} must be a string, not {_show(value)}; put it in quotes, e.g. {name} = \"{_plain(value)}\""
    if kind in ("tuple_type", "list_type"):
        return f"{key} must be a list of strings, e.g. {name} = {_example(info)}"
    if kind in _TABLE:
        if loc and isinstance(loc[-1], int):
            return (f"{key} must be a list of tables; write one [[{key}]] block per entry, "
                    f"e.g. [[{key}]] name = \"...\"")
        return f"[{key}] must be a table of keys; write it as a [{key}] section"
    if kind in ("too_short", "too_long"):
        return f"{key}: {err['msg'].lower()}; fix the number of entries"
    return f"{key} = {_show(value)}: {err['msg']}; fix the value"


def _lookup(model: type[BaseModel], loc: tuple) -> tuple[type[BaseModel] | None, Any]:
    """The model holding the last key of ``loc`` and that key's ``FieldInfo`` (``None`` where unknown)."""
    cls: Any = model
    parent, info = None, None
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            return parent, info  # inside a mapping (a contrast name): the mapping's field
        parent, info = cls, cls.model_fields.get(part)
        if info is None:
            return parent, None
        cls = _model_in(info.annotation)
    return parent, info


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _choices(annotation: Any) -> tuple:
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    return tuple(c for arg in typing.get_args(annotation) for c in _choices(arg))


def _bounds(info) -> tuple[Any, Any, bool, bool]:
    low = high = None
    open_low = open_high = False
    for m in getattr(info, "metadata", ()):
        if isinstance(m, annotated_types.Ge):
            low = m.ge
        elif isinstance(m, annotated_types.Gt):
            low, open_low = m.gt, True
        elif isinstance(m, annotated_types.Le):
            high = m.le
        elif isinstance(m, annotated_types.Lt):
            high, open_high = m.lt, True
    return low, high, open_low, open_high


def _interval(low, high, open_low, open_high) -> str:
    if low is not None and high is not None:
        return f"in {'(' if open_low else '['}{_num(low)}, {_num(high)}{')' if open_high else ']'}"
    if low is not None:
        return f"{'>' if open_low else '>='} {_num(low)}"
    if high is not None:
        return f"{'<' if open_high else '<='} {_num(high)}"
    return "within the documented range"


def _num(x) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() and abs(x) < 1e15 else repr(x)


def _show(value: Any) -> str:
    """A value as the message shows it: ``repr`` (one line, control characters escaped), shortened."""
    text = ("true" if value else "false") if isinstance(value, bool) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _plain(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 30 and text.isprintable() and '"' not in text and "\\" not in text else "..."


def _number_fix(name: str, value: Any, info, whole: bool = False) -> str:
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
        if number is not None and math.isfinite(number) and (not whole or number.is_integer()):
            return f"write it without quotes, {name} = {value.strip()}"
    default = getattr(info, "default", None)
    if whole and isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return f"write it without a decimal point, {name} = {int(value)}"
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        return f"e.g. {name} = {default!r}"
    return "write a number"


def _example(info) -> str:
    examples = getattr(info, "examples", None) or [[]]
    return json.dumps(examples[0])
