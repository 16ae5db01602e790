"""Whole studies (issue 19): every run of every subject, one Dask task per subject, then the group level.

The levels are explicit nodes, as in BIDS Stats Models (FitLins): run -> subject -> dataset.

* **run**: each run goes through the single-run analysis (:func:`analysis.pipeline.run`) in its own output
  folder with its own cache (``first_level/sub-<label>/run-<label>/``), with its own events, confounds, checks and
  calibration (of its own noise model; not the reference model's), without its figures (``output.figures = false``: the study report draws the subjects' maps) and
  without the first-level DMN analysis (the group DMN test works from the subjects' effect maps); adding a
  subject or editing one run's events recomputes only that run;
* **subject**: one Dask task per subject (:func:`first_level_subject`: inputs in, files out, nothing shared but
  paths) fits the subject's runs and combines them with fixed effects (:func:`nilearn.glm.compute_fixed_effects`,
  as nilearn's multi-run ``FirstLevelModel`` combines runs: the mean of the runs' effects, degrees of freedom
  summed; ``tests/test_study.py`` checks the z maps against that model); a run with bad input is left out with its one-line error, a subject without a usable run
  is left out with its reasons (``study.strict`` makes either fatal); per-run QC (scans, tSNR, framewise
  displacement) travels back with the subject's result;
* **dataset**: :func:`group_level` fits nilearn's :class:`~nilearn.glm.second_level.SecondLevelModel` on the
  subjects' fixed-effects maps with an intercept and the ``participants.tsv`` covariates of ``study.covariates``;
  every ``[study.contrasts]`` entry (by design-column name, parsed by :mod:`analysis.contrasts`: nilearn gets
  numbers) is thresholded six ways (:mod:`analysis.inference`) with a labelled cluster table
  (:mod:`analysis.atlas`), and tested without distributional assumptions by
  :func:`~nilearn.glm.second_level.non_parametric_inference` (sign flips or permutations: voxel-level FWE,
  cluster-size FWE and TFCE); the Default Mode Network is tested across subjects (each subject's mean effect in
  the network, one-sample t test).

Outputs (``<output.dir>/<study.dir>/``) form a BIDS derivatives dataset, published whole like a single run's
(:mod:`analysis.outputs`): ``derivatives/sub-<label>/func/`` the subjects' fixed-effects maps,
``derivatives/task-<task>_space-<space>_contrast-<group contrast>_stat-<stat>_statmap.nii.gz`` the group maps
(named by :func:`analysis.derivatives.bids_name`, with JSON sidecars), ``tables/`` (subjects, design, clusters)
and ``results/study.json``, the typed :class:`StudyResults` tree (:mod:`analysis.serial`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import serial
from .config import Config, StudyConfig
from .inference import ThresholdResult
from .serial import JSON_CONFIG, Table

__all__ = ["RunRecord", "SubjectResult", "PermutationResult", "GroupContrast", "GroupDMN", "StudyResults",
           "StudyError", "simulate_study", "simulated_study_config", "study_runs", "read_participants",
           "group_design", "first_level_subject", "run_study", "group_level", "group_dmn", "load_study",
           "STUDY_RESULTS"]

log = logging.getLogger("analysis")

STUDY_TASK = "listening"
STUDY_SPACE = "MNI152NLin2009aSym"  # the simulated data's template (analysis.space.TEMPLATE_SPACE)
STUDY_RESULTS = Path("results") / "study.json"
MOTION_COLUMNS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
PERMUTATION_CHUNKS = 2  # the group permutation test's chunks (nilearn's n_jobs), each its own seed: _permutations


class StudyError(ValueError):
    """A study that cannot go on (a bad subject under ``study.strict``, too few subjects); one line."""


# ----------------------------------------------------------------------------- data

def _simulate_subject(root: str, sub: str, n_runs: int, seed: int, psc: float, dmn: float, shift, motion_mm: float,
                      tsnr_gm: float) -> dict:
    """One simulated subject's runs (events, BOLD, mask, confounds) and its planted effect; for a process pool."""
    import nibabel as nib

    from . import simulate

    root = Path(root)
    regions = tuple((name, tuple(float(c) + float(d) for c, d in zip(centre, shift)), axes)
                    for name, centre, axes in simulate.SimulationParams().auditory_regions)
    func, dfunc = root / f"sub-{sub}" / "func", root / "derivatives" / "fmriprep" / f"sub-{sub}" / "func"
    truth = root / "derivatives" / "truth"
    for folder in (func, dfunc, truth):
        folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for r in range(1, n_runs + 1):
        run_seed = seed * 1000 + int(sub) * 10 + r
        run = simulate.simulate_run(seed=run_seed, auditory_psc=psc, dmn_psc=dmn, auditory_regions=regions,
                                    tsnr_gm=tsnr_gm)
        motion = _motion(np.random.default_rng(run_seed + 7), run.bold_img.shape[3], motion_mm)
        bold = np.asarray(run.bold_img.dataobj, dtype=np.float32)
        # a head-motion artefact the confounds explain: intensity follows the z translation (0.2 % per mm)
        bold *= (1.0 + 0.002 * motion["trans_z"].to_numpy(np.float32))[None, None, None, :]
        ent = f"sub-{sub}_task-{STUDY_TASK}" + (f"_run-{r}" if n_runs > 1 else "")
        run.events.to_csv(func / f"{ent}_events.tsv", sep="\t", index=False)
        nib.save(nib.Nifti1Image(bold, run.bold_img.affine, run.bold_img.header),
                 dfunc / f"{ent}_space-{STUDY_SPACE}_desc-preproc_bold.nii.gz")
        nib.save(run.mask_img, dfunc / f"{ent}_space-{STUDY_SPACE}_desc-brain_mask.nii.gz")
        motion.to_csv(dfunc / f"{ent}_desc-confounds_timeseries.tsv", sep="\t", index=False, na_rep="n/a",
                      float_format="%.6g")
        if r == 1:
            nib.save(run.truth.effect_img, truth / f"sub-{sub}_effect.nii.gz")
            out["auditory"] = np.asarray(run.truth.auditory_mask_img.dataobj) > 0
            out["dmn_mask_img"] = run.truth.dmn_mask_img
            out["affine"] = run.truth.auditory_mask_img.affine
    return out


def _motion(rng, n_scans: int, motion_mm: float) -> pd.DataFrame:
    """fMRIPrep-like motion parameters (mm, rad): slow random walks, and the framewise displacement (50 mm head)."""
    steps = rng.normal(0.0, motion_mm / 4, (n_scans, 6))
    steps[:, 3:] /= 50.0  # rotations in radians: the same displacement at 50 mm
    params = np.cumsum(steps, axis=0)
    params -= params[0]
    table = pd.DataFrame(params, columns=list(MOTION_COLUMNS))
    diff = np.abs(np.diff(params, axis=0))
    fd = diff[:, :3].sum(1) + 50.0 * diff[:, 3:].sum(1)
    table["framewise_displacement"] = np.concatenate([[np.nan], fd])
    return table


def simulate_study(root: str | Path, n_subjects: int = 4, n_runs: int = 2, *, seed: int = 0,
                   auditory_psc: float = 2.0, auditory_sd: float = 0.15, shift_mm: float = 2.0,
                   dmn_psc: float = -0.8, dmn_sd: float = 0.2, tsnr_gm: float = 70.0, motion_mm: float = 0.3,
                   n_jobs: int = 1) -> Path:
    """Write a simulated BIDS study: events, fMRIPrep-like derivatives and confounds, participants and the truth.

    Each subject's auditory response is ``N(auditory_psc, auditory_sd)`` % and its regions are moved by up to
    ``shift_mm`` along each axis; its DMN effect is ``N(dmn_psc, dmn_sd)`` % (nothing when ``dmn_psc = 0``).
    Every run has motion parameters (random walks of about ``motion_mm``) in its
    ``desc-confounds_timeseries.tsv`` and an intensity artefact that follows them. ``participants.tsv`` has
    ``age`` and ``sex``; ``truth.json`` the planted values; ``derivatives/truth/`` each subject's planted effect,
    the DMN mask and where the auditory response was planted in every subject (``common``) or in any (``union``).
    The subjects' parameters are drawn in order from one seeded generator, so ``n_jobs`` (processes) changes no
    byte.
    """
    import nibabel as nib

    from . import simulate

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    truth: dict = {"subjects": {}, "seed": seed, "n_runs": n_runs}
    participants, jobs = [], []
    for s in range(1, n_subjects + 1):
        sub = f"{s:02d}"
        psc = float(rng.normal(auditory_psc, auditory_sd))
        dmn = float(rng.normal(dmn_psc, dmn_sd)) if dmn_psc else 0.0
        shift = [float(v) for v in rng.uniform(-shift_mm, shift_mm, 3)]
        participants.append({"participant_id": f"sub-{sub}", "age": int(rng.integers(19, 40)),
                             "sex": str(rng.choice(["F", "M"]))})
        truth["subjects"][sub] = {"auditory_psc": psc, "dmn_psc": dmn, "shift_mm": shift}
        jobs.append((str(root), sub, n_runs, seed, psc, dmn, shift, motion_mm, tsnr_gm))
    if n_jobs > 1:
        import concurrent.futures as cf
        import multiprocessing as mp

        with cf.ProcessPoolExecutor(n_jobs, mp_context=mp.get_context("spawn")) as pool:
            planted = list(pool.map(_simulate_subject, *zip(*jobs)))
    else:
        planted = [_simulate_subject(*job) for job in jobs]
    common = np.all([p["auditory"] for p in planted], axis=0)
    union = np.any([p["auditory"] for p in planted], axis=0)
    affine = planted[0]["affine"]
    tdir = root / "derivatives" / "truth"
    nib.save(planted[0]["dmn_mask_img"], tdir / "dmn_mask.nii.gz")
    for name, m in (("common", common), ("union", union)):
        nib.save(nib.Nifti1Image(m.astype(np.uint8), affine), tdir / f"auditory_{name}_mask.nii.gz")
    pd.DataFrame(participants).to_csv(root / "participants.tsv", sep="\t", index=False)
    (root / "participants.json").write_text(json.dumps({
        "age": {"Description": "age at scan", "Units": "year"},
        "sex": {"Description": "sex", "Levels": {"F": "female", "M": "male"}}}, indent=1))
    (root / "dataset_description.json").write_text(json.dumps({"Name": "simulated listening study",
                                                               "BIDSVersion": "1.8.0"}))
    (root / f"task-{STUDY_TASK}_bold.json").write_text(json.dumps({"RepetitionTime": simulate.REFERENCE_T_R,
                                                                  "TaskName": STUDY_TASK}))
    (root / "truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True))
    return root


def simulated_study_config(config: Config) -> Config:
    """``--dataset simulated-study``: a simulated study of ``study.n_subjects`` x ``study.n_runs`` (made once).

    The data go to ``<output.cache_dir>/simulated-study-<subjects>x<runs>-seed<seed>/``; the returned config
    reads them as a BIDS dataset with fMRIPrep derivatives and the six motion confounds.
    """
    from .cache import cache_dir

    s = config.study
    root = cache_dir(config) / f"simulated-study-{s.n_subjects}x{s.n_runs}-seed{config.data.seed}"
    if not (root / "truth.json").exists():  # written last: a killed simulation is simply redone
        log.info("simulating a study of %d subjects x %d runs in %s", s.n_subjects, s.n_runs, root)
        simulate_study(root, s.n_subjects, s.n_runs, seed=config.data.seed,
                       auditory_psc=config.simulation.auditory_psc, dmn_psc=config.simulation.dmn_psc,
                       tsnr_gm=config.simulation.tsnr_gm, n_jobs=min(os.cpu_count() or 1, 4))
    return config.replace(data={"dataset": "bids"},
                          bids={"root": str(root), "task": STUDY_TASK, "space": STUDY_SPACE,
                                "confounds": list(MOTION_COLUMNS)},
                          glm={"t_r": 0.0})


def study_runs(root: str | Path, task: str, subjects: tuple[str, ...] | list[str] | str = "all",
               session: str = "") -> dict[str, list[str]]:
    """``{subject: [run labels]}`` of a BIDS dataset for ``task`` (``[""]`` when a subject has a single run).

    Runs are found by their ``events.tsv`` files (the raw dataset lists every run that was acquired).
    """
    root = Path(root)
    if not root.is_dir():
        raise StudyError(f"{root}: the BIDS dataset folder does not exist; check bids.root")
    found = sorted(p.name[4:] for p in root.glob("sub-*") if p.is_dir())
    wanted = found if subjects == "all" else [str(s) for s in subjects]
    missing = [s for s in wanted if s not in found]
    if missing:
        raise StudyError(f"{root}: no folder for subject(s) {', '.join(missing)}; subjects found: "
                         f"{', '.join(found) or 'none'}")
    if not wanted:
        raise StudyError(f"{root}: no sub-<label> folder; is bids.root a BIDS dataset?")
    out = {}
    ses = f"_ses-{session}" if session else ""
    for sub in wanted:
        events = sorted((root / f"sub-{sub}").rglob(f"sub-{sub}{ses}*_task-{task}_*events.tsv"))
        runs = sorted({m.group(1) for e in events if (m := re.search(r"_run-([A-Za-z0-9]+)_", e.name))},
                      key=lambda r: (len(r), r))
        out[sub] = runs or [""]
    return out


def read_participants(root: str | Path) -> pd.DataFrame:
    """``participants.tsv`` indexed by label without ``sub-`` (an empty table when there is none)."""
    path = Path(root) / "participants.tsv"
    if not path.exists():
        return pd.DataFrame(index=pd.Index([], name="subject"))
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if "participant_id" not in table.columns:
        raise StudyError(f"{path}: no participant_id column; BIDS requires it")
    table.index = pd.Index(table.pop("participant_id").str.removeprefix("sub-"), name="subject")
    return table


def group_design(participants: pd.DataFrame, subjects: list[str], covariates: tuple[str, ...],
                 source: str = "participants.tsv") -> tuple[pd.DataFrame, dict[str, str]]:
    """The group design matrix (index: subjects) and the subjects left out for a missing covariate value.

    ``intercept``, then each covariate: a numeric column (every value a number) centred on the subjects that
    enter; a categorical one as indicators of every level but the first in sorted order (``sex_M``), centred, so
    ``intercept`` is always the mean over subjects. Raises :class:`StudyError` for a column that is not there.
    """
    excluded: dict[str, str] = {}
    table = participants.reindex(subjects)
    for c in covariates:
        if c not in participants.columns:
            valid = [k for k in participants.columns]
            raise StudyError(f"{source}: no column {c!r} for study.covariates; columns: {', '.join(valid) or 'none'}")
    for sub in subjects:
        if sub not in participants.index and covariates:
            excluded[sub] = f"{source}: no row for sub-{sub}, so no {', '.join(covariates)}"
            continue
        for c in covariates:
            v = str(table.loc[sub, c]).strip()
            if v in ("", "n/a", "nan"):
                excluded[sub] = f"{source}: {c} is n/a for sub-{sub}"
                break
    keep = [s for s in subjects if s not in excluded]
    design = pd.DataFrame({"intercept": np.ones(len(keep))}, index=pd.Index(keep, name="subject"))
    for c in covariates:
        values = table.loc[keep, c].astype(str).str.strip()
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.notna().all():
            design[c] = numbers - numbers.mean()
        else:
            for level in sorted(values.unique())[1:]:
                indicator = (values == level).astype(float)
                design[f"{c}_{level}"] = indicator - indicator.mean()
    return design, excluded


def _contrast_vectors(contrasts: dict[str, str], design: pd.DataFrame) -> dict[str, np.ndarray]:
    """Weights of each group contrast over the design columns (:mod:`analysis.contrasts`; numbers for nilearn)."""
    from .contrasts import ContrastError, contrast_vector

    out = {}
    for name, expr in contrasts.items():
        try:
            out[name] = contrast_vector(expr, list(design.columns), name)
        except ContrastError as exc:
            raise StudyError(f"[study.contrasts] {str(exc).replace('valid design columns', 'group design columns')}"
                             ) from None
        if not np.any(out[name]):
            raise StudyError(f"[study.contrasts] group contrast {name!r} has all-zero weights; it tests nothing")
    return out


# ----------------------------------------------------------------------------- subject level

@dataclass(frozen=True)
class RunRecord:
    """One run's first level: its QC and where its maps are, or why it was left out."""

    __pydantic_config__ = JSON_CONFIG

    run: str
    ok: bool
    reason: str = ""
    output_dir: str = ""  # the run's own output folder (and cache), relative to the study folder
    n_scans: int = 0
    dof: float = 0.0
    tsnr: float = float("nan")  # median temporal SNR in the analysis mask (the brain mask without constant or non-finite voxels)
    mean_fd: float = float("nan")  # framewise displacement (mm), when the confounds file has it
    max_fd: float = float("nan")
    z_max: float = float("nan")  # the run's first-level contrast


@dataclass(frozen=True)
class SubjectResult:
    """One subject: its runs, whether it entered the group (and why not), its fixed-effects maps."""

    __pydantic_config__ = JSON_CONFIG

    subject: str
    included: bool
    reason: str = ""
    runs: tuple[RunRecord, ...] = ()
    files: dict[str, str] = field(default_factory=dict)  # effect, variance, z: relative to the study folder
    seconds: float = 0.0  # wall time of the subject's task (not in the JSON's comparisons; see StudyResults)

    @property
    def n_runs(self) -> int:
        return len(self.runs)

    @property
    def n_runs_used(self) -> int:
        return sum(r.ok for r in self.runs)

    @property
    def runs_left_out(self) -> dict[str, str]:
        return {r.run or "1": r.reason for r in self.runs if not r.ok}


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _run_qc(res) -> dict[str, float]:
    """tSNR (median over the analysis mask of mean / sd over time) and framewise displacement of one run."""
    import nibabel as nib

    files = {Path(f.path).name: f.path for f in res.dataset.files.values()}
    qc: dict[str, float] = {}
    bold = next((p for n, p in files.items() if n.endswith("_bold.nii.gz") or n.endswith("_bold.nii")), None)
    mask = next((p for n, p in files.items() if "_mask.nii" in n), None)
    if res.dataset.median_tsnr is not None:  # from the run's one read (results of this version)
        qc["tsnr"] = float(res.dataset.median_tsnr)
    elif bold is not None:  # results saved before they carried it: read the run again
        data = np.asarray(nib.load(bold).dataobj, dtype=np.float32)
        inside = (np.asarray(nib.load(mask).dataobj) > 0) if mask else data.mean(-1) > 0
        series = data[inside]
        sd = series.std(axis=1)
        ok = sd > 0
        qc["tsnr"] = float(np.median(series.mean(axis=1)[ok] / sd[ok])) if ok.any() else float("nan")
    conf = next((p for n, p in files.items() if n.endswith("desc-confounds_timeseries.tsv")), None)
    if conf is None and bold is not None:  # fMRIPrep's confounds beside the run, also when the GLM did not use them
        stem = Path(bold).name.split("_space-")[0]
        candidate = Path(bold).with_name(f"{stem}_desc-confounds_timeseries.tsv")
        conf = str(candidate) if candidate.exists() else None
    if conf is not None:
        table = pd.read_csv(conf, sep="\t", na_values="n/a")
        if "framewise_displacement" in table.columns:
            fd = table["framewise_displacement"].to_numpy(float)
            fd = fd[np.isfinite(fd)]
            if fd.size:
                qc["mean_fd"], qc["max_fd"] = float(fd.mean()), float(fd.max())
    return qc


def _save_atomic(img, path: Path) -> None:
    import nibabel as nib

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.nii.gz")
    nib.save(img, tmp)
    os.replace(tmp, path)


def first_level_subject(config: Config, subject: str, runs: list[str], out: str, contrast: str) -> SubjectResult:
    """One Dask task: every run of ``sub-<subject>`` through the single-run analysis, then fixed effects.

    Pure as far as Dask is concerned: inputs in, files out (under ``out/first_level/sub-<subject>/``), nothing
    shared but paths. Bad input in a run (the single-run analysis's one-line ``ValueError``) leaves that run out;
    a subject without a usable run is an outcome with its reasons, not an exception. Each run keeps its own
    cache, so a retried task (a worker that died) or a re-run of the study recomputes only what changed.
    """
    import nibabel as nib
    from nilearn.glm import compute_fixed_effects

    from .pipeline import run as run_analysis

    t0 = time.perf_counter()
    study_out = Path(out)
    sub_dir = study_out / "first_level" / f"sub-{subject}"
    records, maps = [], []
    for run in runs:
        run_dir = sub_dir / (f"run-{run}" if run else "run-1")
        # the run's own analysis without its figures and first-level DMN analysis: the study report draws the
        # subjects' maps, and the group DMN test works from the subjects' effect maps
        cfg = config.replace(bids={"subject": subject, "run": run},
                             output={"dir": str(run_dir), "cache_dir": ".cache", "figures": False},
                             dmn={"enabled": False},
                             # the subject table shows the run's own model's calibration verdict: the comparison
                             # with nilearn's reference noise model is the single-run report's
                             calibration={"reference_model": ""},
                             study=StudyConfig().model_dump())  # the study's settings are not the run's
        rel = run_dir.relative_to(study_out).as_posix()
        try:
            res = run_analysis(cfg)
            c = res.contrast(contrast)
            qc = _run_qc(res)
        except (ValueError, OSError) as exc:  # DataError, ConfigError, ContrastError, a missing file
            records.append(RunRecord(run, False, _first_line(exc), rel))
            continue
        records.append(RunRecord(run, True, "", rel, n_scans=res.dataset.n_scans, dof=float(res.model.dof),
                                 z_max=float(c.z_max), **qc))
        maps.append((res.path(c.files["effect"]), res.path(c.files["variance"]), float(res.model.dof)))
    records_t = tuple(records)
    if not maps:
        reasons = "; ".join(dict.fromkeys(r.reason for r in records))
        return SubjectResult(subject, False, reasons, records_t, seconds=time.perf_counter() - t0)
    con = [nib.load(m[0]) for m in maps]
    var = [nib.load(m[1]) for m in maps]
    inside = np.all([np.asarray(v.dataobj) > 0 for v in var], axis=0)  # every run's mask
    mask = nib.Nifti1Image(inside.astype(np.uint8), con[0].affine)
    # fixed effects over the runs as nilearn's multi-run FirstLevelModel combines them (the mean of the runs'
    # effects, variance sum / n^2, degrees of freedom summed; tests/test_study.py compares the two)
    effect, variance, _t, z = compute_fixed_effects(con, var, mask=mask, precision_weighted=False,
                                                    dofs=[m[2] for m in maps])
    files = {}
    for role, img in (("effect", effect), ("variance", variance), ("z", z)):
        data = np.where(inside, np.asarray(img.dataobj, dtype=np.float32), np.float32(0))
        path = sub_dir / f"sub-{subject}_stat-{role}_fixedeffects.nii.gz"
        _save_atomic(nib.Nifti1Image(data, con[0].affine), path)
        files[role] = path.relative_to(study_out).as_posix()
    return SubjectResult(subject, True, "", records_t, files, seconds=time.perf_counter() - t0)


# ----------------------------------------------------------------------------- group results

@dataclass(frozen=True)
class PermutationResult:
    """Non-parametric inference of one group contrast (nilearn's ``non_parametric_inference``).

    Counts are voxels with a family-wise error corrected p below ``alpha`` for each method; ``min_p`` is the
    smallest p the relabellings can give (``1 / n_distinct``), so no voxel can survive when it exceeds ``alpha``.
    """

    __pydantic_config__ = JSON_CONFIG

    n_perm: int
    n_distinct: int  # distinct relabellings (2^N sign flips for a one-sample test)
    min_p: float
    alpha: float
    two_sided: bool
    cdt_p: float  # cluster-forming threshold (p, uncorrected) of the cluster-size FWE
    tfce: bool
    n_voxel_fwe: int
    n_cluster_fwe: int
    n_tfce_fwe: int = 0
    files: dict[str, str] = field(default_factory=dict)
    tfce_reason: str = ""  # why TFCE was not computed


@dataclass(frozen=True)
class GroupContrast:
    """One group contrast: its weights, thresholds side by side, labelled clusters and permutation test."""

    __pydantic_config__ = JSON_CONFIG

    name: str
    entity: str
    expression: str
    vector: tuple[float, ...]
    thresholds: tuple[ThresholdResult, ...]
    primary_key: str
    clusters: Table
    z_max: float
    z_min: float
    dof: float
    files: dict[str, str] = field(default_factory=dict)
    permutation: PermutationResult | None = None

    @property
    def primary(self) -> ThresholdResult:
        return self.threshold(self.primary_key)

    def threshold(self, key: str) -> ThresholdResult:
        for t in self.thresholds:
            if t.key == key:
                return t
        raise KeyError(f"no threshold {key!r}; have {[t.key for t in self.thresholds]}")


@dataclass(frozen=True)
class GroupDMN:
    """The Default Mode Network across subjects: each subject's mean effect in it, one-sample t test."""

    __pydantic_config__ = JSON_CONFIG

    available: bool
    network: str = ""
    reason: str = ""  # why not available
    effects: dict[str, float] = field(default_factory=dict)  # subject -> mean effect (% signal change)
    mean: float = float("nan")
    sd: float = float("nan")
    t: float = float("nan")
    dof: int = 0
    p: float = float("nan")  # two-sided
    alpha: float = 0.05
    n_voxels: int = 0

    @property
    def significant(self) -> bool:
        return self.available and math.isfinite(self.p) and self.p < self.alpha

    @property
    def direction(self) -> str:
        """``deactivation``, ``activation`` or ``none`` (what the test found, never more)."""
        if not self.significant:
            return "none"
        return "deactivation" if self.t < 0 else "activation"

    @property
    def n_negative(self) -> int:
        return sum(v < 0 for v in self.effects.values())


@dataclass(frozen=True)
class StudyResults:
    """Everything the study report shows (``results/study.json``; :func:`analysis.serial.to_json`)."""

    __pydantic_config__ = JSON_CONFIG

    config: Config
    task: str
    space: str
    first_level_contrast: str
    subjects: tuple[SubjectResult, ...]
    design: Table  # the group design matrix (index: subject)
    contrasts: dict[str, GroupContrast]
    dmn: GroupDMN
    versions: dict[str, str]
    files: dict[str, str] = field(default_factory=dict)  # mask, subjects table, design table
    output_dir: str = ""  # not compared: set when read (StudyResults are read from a folder)

    @property
    def included(self) -> tuple[SubjectResult, ...]:
        return tuple(s for s in self.subjects if s.included)

    @property
    def excluded(self) -> dict[str, str]:
        return {s.subject: s.reason for s in self.subjects if not s.included}

    @property
    def n_subjects(self) -> int:
        return len(self.included)

    def contrast(self, name: str | None = None) -> GroupContrast:
        if name is None:
            return next(iter(self.contrasts.values()))
        return self.contrasts[name]

    def path(self, relative: str) -> Path:
        return Path(self.output_dir) / relative

    def dmn_text(self) -> str:
        """The group DMN paragraph (``study_dmn.md.j2``): what the one-sample test found, nothing more."""
        from . import text

        return text.render("study_dmn.md.j2", dmn=self.dmn, contrast=self.first_level_contrast, n=self.n_subjects)

    def methods_text(self) -> str:
        from . import text

        return text.render("study_methods.md.j2", s=self, c=self.contrast(), study=self.config.study)

    def results_text(self, name: str | None = None) -> str:
        from . import text

        return text.render("study_results.md.j2", s=self, c=self.contrast(name))

    def subject_table(self) -> pd.DataFrame:
        """One row per subject: runs used / found, mean tSNR and FD over its runs, and why it (or a run) was left out."""
        rows = []
        for s in self.subjects:
            ok = [r for r in s.runs if r.ok]
            left = "; ".join(f"run {k}: {v}" for k, v in s.runs_left_out.items())
            rows.append({"subject": s.subject, "included": s.included, "runs": f"{s.n_runs_used}/{s.n_runs}",
                         "tSNR": float(np.mean([r.tsnr for r in ok])) if ok else float("nan"),
                         "mean FD (mm)": float(np.mean([r.mean_fd for r in ok])) if ok else float("nan"),
                         "max FD (mm)": float(np.max([r.max_fd for r in ok])) if ok else float("nan"),
                         "reason": s.reason if not s.included else left})
        return pd.DataFrame(rows)


def load_study(config: Config) -> StudyResults:
    """The saved study results of ``config`` (``<output.dir>/<study.dir>/results/study.json``)."""
    out = study_dir(config)
    path = out / STUDY_RESULTS
    if not path.exists():
        raise StudyError(f"{path}: no study results; run 'fmri-report study' first")
    return dataclasses.replace(serial.from_json(StudyResults, path.read_bytes()), output_dir=str(out))


def study_dir(config: Config) -> Path:
    d = Path(config.study.dir)
    return (d if d.is_absolute() else Path(config.output.dir) / d).resolve()


# ----------------------------------------------------------------------------- orchestration

def _check_study_config(config: Config) -> str:
    """Fail before any computation: the data section, the first-level contrast; returns the contrast's name."""
    if config.data.dataset != "bids":
        raise StudyError(f"{config.source or 'config'}: a study needs data.dataset = \"bids\" (and bids.root, "
                         f"bids.task), not {config.data.dataset!r}; or use --dataset simulated-study")
    if not config.bids.root or not config.bids.task:
        raise StudyError(f"{config.source or 'config'}: a study needs bids.root and bids.task; set them")
    contrast = config.study.contrast or next(iter(config.contrasts))
    if contrast not in config.contrasts:
        raise StudyError(f"{config.source or 'config'}: study.contrast = {contrast!r} is not in [contrasts]; "
                         f"choose one of {', '.join(config.contrasts)}")
    return contrast


def worker_environ() -> dict:
    """The environment of a LocalCluster's worker processes: Dask's own (``distributed.nanny.pre-spawn-environ``:
    one BLAS thread per single-threaded worker, and whatever the user configured) without
    ``MALLOC_TRIM_THRESHOLD_``. Setting that pins glibc's mmap threshold at 128 kB, so every array larger than that
    is mapped and unmapped afresh and its pages faulted in again: a first-level subject of the reference study took
    2.8-3.2 s of system time instead of 1.3-1.5 s (same user time). The analysis frees its large arrays as it goes;
    a worker's memory stays bounded by ``study.memory_limit`` either way."""
    import dask

    environ = dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {}
    return {k: v for k, v in environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}


def run_study(config: Config, *, scheduler: str | None = None, n_workers: int | None = None,
              strict: bool | None = None, task=None, progress=None, network_img=None) -> StudyResults:
    """Every subject's first level as one Dask task, then the group level; returns the typed study results.

    Parameters
    ----------
    config : Config
        ``[bids]`` names the dataset (``root``, ``task``, ``space``, ``confounds``), ``[study]`` the subjects,
        the cluster and the group model.
    scheduler : str, optional
        Address of a running Dask scheduler (overrides ``study.scheduler``); without one a ``LocalCluster`` of
        ``n_workers`` single-threaded worker processes with ``study.memory_limit`` each is started.
    n_workers : int, optional
        Overrides ``study.n_workers`` (0 = one per core).
    strict : bool, optional
        Overrides ``study.strict``: a subject (or run) with bad input raises :class:`StudyError`.
    task : callable, optional
        The subject task (default :func:`first_level_subject`); tests wrap it.
    progress : callable, optional
        Called with one line per finished subject (default: the ``analysis`` logger).
    network_img : Nifti1Image, optional
        The network of the group DMN test (default: the Yeo 2011 Default network, when ``dmn.enabled``).

    Raises
    ------
    StudyError
        One line: a bad ``[study]`` value, a covariate column that is not there, a group contrast naming an
        unknown column, a bad subject under ``strict``, fewer than two usable subjects.
    """
    import dask
    from distributed import Client, LocalCluster, as_completed

    s = config.study
    contrast = _check_study_config(config)
    strict = s.strict if strict is None else strict
    scheduler = scheduler if scheduler is not None else s.scheduler
    n_workers = s.n_workers if n_workers is None else n_workers
    task = task or first_level_subject
    progress = progress or log.info
    out = study_dir(config)
    runs = study_runs(config.bids.root, config.bids.task, s.subjects, config.bids.session)
    participants = read_participants(config.bids.root)
    source = str(Path(config.bids.root) / "participants.tsv")
    design, no_covariate = group_design(participants, list(runs), s.covariates, source)
    _contrast_vectors(dict(s.contrasts), design)  # every group contrast names design columns: before any fit
    if no_covariate and strict:
        sub, why = next(iter(no_covariate.items()))
        raise StudyError(f"sub-{sub}: {why} (study.strict)")
    from . import outputs

    out.mkdir(parents=True, exist_ok=True)
    outputs.check_owned(out)  # nothing of the user's is in the study's output folders: before any computation
    todo = [sub for sub in runs if sub not in no_covariate]
    results: dict[str, SubjectResult] = {
        sub: SubjectResult(sub, False, why) for sub, why in no_covariate.items()}
    t0 = time.perf_counter()
    with dask.config.set({"distributed.worker.daemon": False,  # the first levels start figure processes
                          "distributed.scheduler.allowed-failures": max(s.retries, 1),
                          "distributed.nanny.pre-spawn-environ": worker_environ()}):
        cluster = None
        if not scheduler:
            cluster = LocalCluster(n_workers=n_workers or os.cpu_count() or 1, threads_per_worker=1,
                                   processes=True, memory_limit=s.memory_limit, dashboard_address=None)
        try:
            with Client(scheduler or cluster) as client:
                where = scheduler or f"a LocalCluster of {len(cluster.workers)} workers ({s.memory_limit} each)"
                progress(f"study: {len(todo)} subjects, {sum(len(runs[x]) for x in todo)} runs on {where}")
                futures = client.map(task, [config] * len(todo), todo, [runs[x] for x in todo],
                                     [str(out)] * len(todo), [contrast] * len(todo),
                                     key=[f"first-level-sub-{x}" for x in todo], retries=s.retries, pure=False)
                # the group DMN test's network (an atlas read and resampled, about 1.4 s) as a task of its own after
                # the subjects' (lower priority): it runs on the first worker to run out of subjects, not on the
                # client after the first levels
                network_task = None if network_img is not None else client.submit(
                    _network_in_memory, config, key="group-dmn-network", priority=-1, retries=s.retries, pure=False)
                for i, fut in enumerate(as_completed(futures), 1):
                    r = fut.result()
                    results[r.subject] = r
                    if strict and (not r.included or r.runs_left_out):  # fatal: stop the other subjects now
                        client.cancel(futures)
                        why = r.reason or "; ".join(f"run {k}: {v}" for k, v in r.runs_left_out.items())
                        raise StudyError(f"sub-{r.subject}: {why} (study.strict)")
                    if r.included:
                        left = f", left out {', '.join(f'run {k} ({v})' for k, v in r.runs_left_out.items())}" \
                            if r.runs_left_out else ""
                        progress(f"[{i}/{len(todo)}] sub-{r.subject}: {r.n_runs_used} of {r.n_runs} runs, "
                                 f"{r.seconds:.1f} s{left}")
                    else:
                        progress(f"[{i}/{len(todo)}] sub-{r.subject}: left out ({r.reason})")
                network = network_task.result() if network_task is not None else None
        finally:
            if cluster is not None:
                cluster.close()
    subjects = [results[x] for x in sorted(results)]
    bad = [x for x in subjects if not x.included or x.runs_left_out]
    if bad and strict:
        b = bad[0]
        why = b.reason or "; ".join(f"run {k}: {v}" for k, v in b.runs_left_out.items())
        raise StudyError(f"sub-{b.subject}: {why} (study.strict)")
    progress(f"first levels done in {time.perf_counter() - t0:.1f} s; group level")
    return group_level(config, subjects, participants, contrast, network_img=network_img, network=network)


def group_level(config: Config, subjects: list[SubjectResult], participants: pd.DataFrame,
                contrast: str, *, network_img=None, network: tuple | None = None) -> StudyResults:
    """The dataset level from the subjects' fixed-effects maps: staged, then published whole.

    ``network``: the group DMN test's network and its name as :func:`_dmn_network` returns them, when computed
    already (by the study's cluster); otherwise read here. ``network_img`` (a mask given) overrides both.
    """
    from . import __version__, outputs
    from .pipeline import package_versions

    out = study_dir(config)
    included = [x.subject for x in subjects if x.included]
    if len(included) < 2:
        raise StudyError(f"{out}: only {len(included)} subject(s) with usable runs; a group test needs at least 2 "
                         f"(left out: {'; '.join(f'sub-{x.subject}: {x.reason}' for x in subjects if not x.included)})")
    design, _ = group_design(participants, included, config.study.covariates)
    if np.linalg.matrix_rank(design.to_numpy()) < design.shape[1] or len(included) <= design.shape[1]:
        raise StudyError(f"{out}: the group design ({', '.join(design.columns)}) over {len(included)} subjects "
                         "leaves no degrees of freedom or has collinear columns; add subjects or drop covariates")
    vectors = _contrast_vectors(dict(config.study.contrasts), design)
    with outputs.lock(out / ".analysis.lock"):
        outputs.remove_stale(out)
        stage = outputs.new_stage(out)
        try:
            network = ((network_img, "the network mask given") if network_img is not None
                       else network or _dmn_network(config))
            results = _group_in(stage, out, config, subjects, design, vectors, contrast, __version__, package_versions(),
                                network)
            (stage / STUDY_RESULTS).write_text(serial.to_json(results), encoding="utf-8")
            outputs.write_manifest(stage)
            outputs.publish(stage, out)
        finally:
            outputs.discard(stage)
    return dataclasses.replace(results, output_dir=str(out))


def _group_in(stage: Path, out: Path, config: Config, subjects: list[SubjectResult], design: pd.DataFrame,
              vectors: dict[str, np.ndarray], contrast: str, version: str, versions: dict,
              network) -> StudyResults:
    import nibabel as nib
    from nilearn.glm.second_level import SecondLevelModel

    from .contrasts import entity
    from .derivatives import RunEntities, bids_name, write_dataset_description, write_image

    s = config.study
    task, space = config.bids.task, config.bids.space or "MNI152NLin2009aSym"
    first_ent = entity(contrast)
    included = [x for x in subjects if x.included]
    unit = "% signal change" if config.glm.signal_scaling == 0 else "BOLD units"
    files: dict[str, str] = {}
    # the subject level: fixed-effects maps as derivatives (sub-<label>/func/, no run entity)
    effects, masks, sub_files = [], [], {}
    for x in included:
        ents = RunEntities(sub=x.subject, task=task, space=space)
        runs = [r.run or "1" for r in x.runs if r.ok]
        rel = {}
        for role, stat, desc in (("effect", "effect", "effect size"), ("variance", "variance", "variance"),
                                 ("z", "z", "z")):
            img = nib.load(out / x.files[role])
            name = f"{ents.folder}/{bids_name(ents, 'statmap', '.nii.gz', contrast=first_ent, stat=stat)}"
            rel[role] = write_image(stage, img, name, {
                "Space": space, "Contrast": contrast, "ContrastExpression": config.contrasts[contrast],
                "Statistic": desc, "Level": "subject", "Runs": runs,
                "Method": "fixed effects across runs as nilearn's multi-run FirstLevelModel (nilearn compute_fixed_effects)",
                **({"Units": unit} if role == "effect" else {})})
        sub_files[x.subject] = rel
        effects.append(nib.load(out / x.files["effect"]))
        masks.append(np.asarray(nib.load(out / x.files["variance"]).dataobj) > 0)
    affine = effects[0].affine
    mask_img = nib.Nifti1Image(np.all(masks, axis=0).astype(np.uint8), affine)
    group = RunEntities(task=task, space=space)
    files["mask"] = write_image(stage, mask_img, f"derivatives/{bids_name(group, 'mask', '.nii.gz', desc='group')}",
                                {"Space": space, "Description": "voxels inside every included subject's mask",
                                 "Subjects": [x.subject for x in included]})
    design_rel = f"tables/{bids_name(group, 'design', '.tsv', desc='group')}"
    design.to_csv(stage / design_rel, sep="\t", float_format="%.6g")
    files["design"] = design_rel

    model = SecondLevelModel(mask_img=mask_img, smoothing_fwhm=s.smoothing_fwhm or None, minimize_memory=True)
    model.fit(effects, design_matrix=design.reset_index(drop=True))
    dof = float(len(included) - np.linalg.matrix_rank(design.to_numpy()))
    atlases = _label_atlases(config, space)
    group_contrasts = {}
    for name, vec in vectors.items():
        group_contrasts[name] = _group_contrast(stage, config, model, effects, design, mask_img, name, vec, dof,
                                                group, contrast, atlases, space)
    dmn = group_dmn({x.subject: img for x, img in zip(included, effects)}, mask_img,
                    *network, alpha=config.inference.alpha)
    results = StudyResults(config=config, task=task, space=space, first_level_contrast=contrast,
                           subjects=tuple(dataclasses.replace(x, seconds=0.0, files=sub_files.get(x.subject, {}))
                                          for x in subjects),
                           design=design, contrasts=group_contrasts, dmn=dmn, versions=versions, files=files)
    table_rel = f"tables/{bids_name(group, 'subjects', '.tsv')}"
    results.subject_table().to_csv(stage / table_rel, sep="\t", index=False, float_format="%.6g")
    results = dataclasses.replace(results, files={**files, "subjects": table_rel})
    write_dataset_description(stage, version=version, source=f"BIDS dataset {config.bids.root} (task {task})",
                              versions=versions)
    return results


def _label_atlases(config: Config, space: str):
    if not space.startswith("MNI"):
        return None
    from .atlas import load_label_atlases
    from .data import nilearn_data_dir

    return load_label_atlases(nilearn_data_dir(config))


def _dmn_network(config: Config):
    """The network of the group DMN test (Yeo 2011 Default network) and its name, or (None, reason)."""
    if not config.dmn.enabled:
        return None, "the DMN analysis is switched off (dmn.enabled = false)"
    from .data import nilearn_data_dir
    from .dmn import dmn_definitions

    d = dmn_definitions(nilearn_data_dir(config), control_network=None)
    if d.main_img is None:
        return None, "no network atlas could be loaded (Yeo 2011, Schaefer 2018)"
    return d.main_img, d.network_source


def _network_in_memory(config: Config):
    """:func:`_dmn_network` as a Dask task: the image's voxels in memory, so the client never reads the worker's
    files."""
    import nibabel as nib

    img, name = _dmn_network(config)
    if img is not None:
        img = nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header)
    return img, name


def _group_contrast(stage, config, model, effects, design, mask_img, name, vec, dof, group, first_contrast,
                    atlases, space) -> GroupContrast:
    from . import inference
    from .contrasts import entity
    from .derivatives import bids_name, write_image

    ent = entity(name)
    maps = model.compute_contrast(np.asarray(vec, dtype=float), output_type="all")  # numbers, never a string
    z_img = inference.mask_map(maps["z_score"], mask_img)
    thr = inference.threshold_all(z_img, mask_img, config.inference)
    primary_key = config.inference.primary if config.inference.primary in thr else "fdr_cluster"
    primary_img, primary = thr[primary_key]
    clusters, label_img = inference.cluster_table(z_img, primary, config.inference.min_distance, mask_img)
    if not clusters.empty and atlases is not None:
        from .atlas import label_cluster_table

        clusters = label_cluster_table(clusters, label_img, atlases, space=space)
        clusters.attrs = {}
    expr = config.study.contrasts[name]
    base = {"Space": space, "Level": "group", "Contrast": name, "ContrastExpression": expr,
            "ContrastWeights": dict(zip(design.columns, map(float, vec))), "FirstLevelContrast": first_contrast,
            "Subjects": list(design.index), "DegreesOfFreedom": dof,
            "Model": "nilearn SecondLevelModel (ordinary least squares over subjects)"}
    files = {}
    for role, key, stat in (("z", "z_score", "z"), ("t", "stat", "t"), ("effect", "effect_size", "effect"),
                            ("variance", "effect_variance", "variance")):
        img = inference.mask_map(maps[key], mask_img)
        files[role] = write_image(stage, img, f"derivatives/{bids_name(group, 'statmap', '.nii.gz', contrast=ent, stat=stat)}",
                                  {**base, "Statistic": stat, "Thresholded": False})
    for key, (img, r) in thr.items():
        files[f"thresholded.{key}"] = write_image(
            stage, img, f"derivatives/{bids_name(group, 'statmap', '.nii.gz', contrast=ent, stat='z', desc=entity(key))}",
            {**base, "Statistic": "z", "Thresholded": True, "Threshold": r.label,
             "ZThreshold": r.z_threshold if np.isfinite(r.z_threshold) else None,
             "ClusterExtent": r.spec.cluster_threshold, "Primary": key == primary_key})
    clusters_rel = f"tables/{bids_name(group, 'clusters', '.tsv', contrast=ent)}"
    clusters.to_csv(stage / clusters_rel, sep="\t", index=False, float_format="%.6g")
    files["clusters"] = clusters_rel
    perm = None
    if config.study.n_perm:
        perm = _permutations(stage, config, effects, design, mask_img, vec, group, ent, base)
    z = np.asarray(z_img.dataobj)[np.asarray(mask_img.dataobj) > 0]
    return GroupContrast(name=name, entity=ent, expression=expr, vector=tuple(float(v) for v in vec),
                         thresholds=tuple(r for _, r in thr.values()), primary_key=primary_key, clusters=clusters,
                         z_max=float(z.max()), z_min=float(z.min()), dof=dof, files=files, permutation=perm)


def _permutations(stage, config, effects, design, mask_img, vec, group, ent, base) -> PermutationResult:
    """Sign flips (one-sample) or permutations: voxel-level FWE, cluster-size FWE and TFCE, -log10 p maps."""
    import inspect
    import warnings

    import joblib
    from nilearn.glm.second_level import non_parametric_inference

    from . import noise
    from .derivatives import bids_name, write_image

    s, inf = config.study, config.inference
    one_sample = design.shape[1] == 1
    n = len(design)
    n_distinct = 2 ** n if one_sample else math.factorial(n)
    n_perm = int(min(s.n_perm, n_distinct - 1)) if n_distinct - 1 > 0 else 0
    tfce_supported = "tfce" in inspect.signature(non_parametric_inference).parameters
    tfce = s.tfce and tfce_supported
    # nilearn draws the relabellings in n_jobs chunks, each from its own seed, so the number of chunks (not the
    # cluster's size) decides which are drawn: always PERMUTATION_CHUNKS (nilearn caps it at the machine's CPU
    # count, so one core draws them in one chunk). Threads, not processes: the chunks' numpy work runs in parallel
    # without starting and feeding new Python processes, each with one BLAS thread, since more threads than cores
    # lose their gain (8 subjects: 6.7-7.6 s in one chunk; in two, 6.0-6.9 s with the BLAS threads, 4.4 s
    # with one each)
    chunks = min(PERMUTATION_CHUNKS, joblib.cpu_count())
    with warnings.catch_warnings(), joblib.parallel_config(backend="threading"), noise.blas_threads(1):
        warnings.simplefilter("ignore")
        res = non_parametric_inference(effects, design_matrix=design.reset_index(drop=True),
                                       second_level_contrast=np.asarray(vec, dtype=float), mask=mask_img,
                                       smoothing_fwhm=s.smoothing_fwhm or None, model_intercept=False,
                                       n_perm=max(n_perm, 1), two_sided_test=inf.two_sided,
                                       random_state=s.random_state, n_jobs=chunks, threshold=inf.cdt_alpha,
                                       **({"tfce": True} if tfce else {}))
    cut = -math.log10(inf.alpha)
    inside = np.asarray(mask_img.dataobj) > 0
    files, counts = {}, {}
    for key, desc in (("logp_max_t", "voxelFwe"), ("logp_max_size", "clusterSizeFwe"), ("logp_max_tfce", "tfceFwe")):
        if key not in res:
            continue
        img = res[key]
        files[key] = write_image(
            stage, img, f"derivatives/{bids_name(group, 'statmap', '.nii.gz', contrast=ent, stat='logp', desc=desc)}",
            {**base, "Statistic": "-log10 p, family-wise error corrected (permutations)", "Thresholded": False,
             "Permutations": n_perm, "PermutationChunks": chunks,
             "ClusterFormingThresholdP": inf.cdt_alpha if key == "logp_max_size" else None,
             "TwoSided": inf.two_sided})
        counts[key] = int(np.count_nonzero(np.asarray(img.dataobj)[inside] > cut))
    return PermutationResult(n_perm=n_perm, n_distinct=n_distinct, min_p=1.0 / (n_perm + 1), alpha=inf.alpha,
                             two_sided=inf.two_sided, cdt_p=inf.cdt_alpha, tfce=tfce,
                             n_voxel_fwe=counts.get("logp_max_t", 0), n_cluster_fwe=counts.get("logp_max_size", 0),
                             n_tfce_fwe=counts.get("logp_max_tfce", 0), files=files,
                             tfce_reason="" if tfce else ("study.tfce = false" if tfce_supported else
                                                          "the installed nilearn has no TFCE"))


def group_dmn(effects: dict, mask_img, network_img, network: str, *, alpha: float = 0.05) -> GroupDMN:
    """Each subject's mean effect in the network (inside the group mask), one-sample t test against 0.

    ``network_img`` None: not available, ``network`` then says why.
    """
    from nilearn.image import resample_to_img
    from scipy import stats

    if network_img is None:
        return GroupDMN(False, reason=network, alpha=alpha)
    first = next(iter(effects.values()))
    net = np.asarray(resample_to_img(network_img, first, interpolation="nearest", force_resample=True,
                                     copy_header=True).dataobj) > 0
    inside = net.reshape(first.shape[:3]) & (np.asarray(mask_img.dataobj) > 0)
    if not inside.any():
        return GroupDMN(False, network=network, reason="the network does not overlap the group mask", alpha=alpha)
    values = {sub: float(np.asarray(img.dataobj)[inside].mean()) for sub, img in sorted(effects.items())}
    v = np.array(list(values.values()))
    res = stats.ttest_1samp(v, 0.0)
    return GroupDMN(True, network=network, effects=values, mean=float(v.mean()), sd=float(v.std(ddof=1)),
                    t=float(res.statistic), dof=len(v) - 1, p=float(res.pvalue), alpha=alpha,
                    n_voxels=int(inside.sum()))
