"""Whole studies: every run of every subject through the single-run analysis, on Dask, then a group level.

Work in progress towards issue 19; what is here:

* :func:`simulate_study` writes a BIDS dataset (fMRIPrep-like derivatives in ``MNI152NLin2009aSym``) of
  N subjects x R runs, with between-subject variation of the auditory effect (size and a few mm of location)
  and of the Default Mode deactivation, ``participants.tsv`` (age, sex) and the truth, for tests and demos;
* :func:`run_study` runs each run's first level (the existing single-run analysis, each in its own output
  folder with its own cache, so adding a subject recomputes only that subject) as one Dask task, combines a
  subject's runs with fixed effects (:func:`nilearn.glm.compute_fixed_effects`) and fits the group level with
  nilearn's :class:`~nilearn.glm.second_level.SecondLevelModel` (one-sample t), thresholded and tabled like a
  first-level map, and tests the DMN deactivation across subjects (one-sample t test of each subject's mean
  effect in the network). A run whose input is bad is left out with its one-line error (``strict=True``
  makes it fatal); Dask retries a task whose worker died.

Not yet: nilearn's multi-run ``FirstLevelModel`` (runs are combined by fixed effects here), covariates and
group contrasts from ``participants.tsv``, non-parametric inference, the study report profile, a command.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .config import Config

__all__ = ["RunOutcome", "GroupResult", "simulate_study", "study_runs", "run_study"]

log = logging.getLogger("analysis")

STUDY_TASK = "listening"
STUDY_SPACE = "MNI152NLin2009aSym"  # the simulated data's template (analysis.space.TEMPLATE_SPACE)


# ----------------------------------------------------------------------------- data

def simulate_study(root: str | Path, n_subjects: int = 4, n_runs: int = 2, *, seed: int = 0,
                   auditory_psc: float = 2.0, auditory_sd: float = 0.15, shift_mm: float = 2.0,
                   dmn_psc: float = -0.8, dmn_sd: float = 0.2, tsnr_gm: float = 70.0) -> Path:
    """Write a simulated BIDS study: ``sub-XX/func`` events and fMRIPrep-like derivatives, plus the truth.

    Each subject's auditory response is ``N(auditory_psc, auditory_sd)`` % and its regions are moved by up to
    ``shift_mm`` along each axis; its DMN effect is ``N(dmn_psc, dmn_sd)`` %. ``truth.json`` records them;
    ``derivatives/truth/`` holds the planted masks of the first subject's first run (the group truth is where
    the auditory regions of every subject overlap).
    """
    import nibabel as nib

    from . import simulate

    root = Path(root)
    rng = np.random.default_rng(seed)
    deriv = root / "derivatives" / "fmriprep"
    truth: dict = {"subjects": {}}
    participants = []
    common = union = None
    for s in range(1, n_subjects + 1):
        sub = f"{s:02d}"
        psc = float(rng.normal(auditory_psc, auditory_sd))
        dmn = float(rng.normal(dmn_psc, dmn_sd)) if dmn_psc else 0.0
        shift = rng.uniform(-shift_mm, shift_mm, 3)
        regions = tuple((name, tuple(float(c) + float(d) for c, d in zip(centre, shift)), axes)
                        for name, centre, axes in simulate.SimulationParams().auditory_regions)
        participants.append({"participant_id": f"sub-{sub}", "age": int(rng.integers(19, 40)),
                             "sex": str(rng.choice(["F", "M"]))})
        truth["subjects"][sub] = {"auditory_psc": psc, "dmn_psc": dmn, "shift_mm": [float(v) for v in shift]}
        for r in range(1, n_runs + 1):
            run = simulate.simulate_run(seed=seed * 1000 + s * 10 + r, auditory_psc=psc, dmn_psc=dmn,
                                        auditory_regions=regions, tsnr_gm=tsnr_gm)
            ent = f"sub-{sub}_task-{STUDY_TASK}" + (f"_run-{r}" if n_runs > 1 else "")
            func = root / f"sub-{sub}" / "func"
            dfunc = deriv / f"sub-{sub}" / "func"
            func.mkdir(parents=True, exist_ok=True)
            dfunc.mkdir(parents=True, exist_ok=True)
            run.events.to_csv(func / f"{ent}_events.tsv", sep="\t", index=False)
            nib.save(run.bold_img, dfunc / f"{ent}_space-{STUDY_SPACE}_desc-preproc_bold.nii.gz")
            nib.save(run.mask_img, dfunc / f"{ent}_space-{STUDY_SPACE}_desc-brain_mask.nii.gz")
            auditory = np.asarray(run.truth.auditory_mask_img.dataobj) > 0
            if r == 1:  # the planted effect (% signal change; edges taper) of this subject
                (root / "derivatives" / "truth").mkdir(parents=True, exist_ok=True)
                nib.save(run.truth.effect_img, root / "derivatives" / "truth" / f"sub-{sub}_effect.nii.gz")
            common = auditory if common is None else common & auditory
            union = auditory if union is None else union | auditory
            if s == 1 and r == 1:
                (root / "derivatives" / "truth").mkdir(parents=True, exist_ok=True)
                nib.save(run.truth.dmn_mask_img, root / "derivatives" / "truth" / "dmn_mask.nii.gz")
                affine = run.truth.auditory_mask_img.affine
    for name, m in (("common", common), ("union", union)):  # planted in every subject / in any subject
        nib.save(nib.Nifti1Image(m.astype(np.uint8), affine), root / "derivatives" / "truth" / f"auditory_{name}_mask.nii.gz")
    pd.DataFrame(participants).to_csv(root / "participants.tsv", sep="\t", index=False)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "simulated listening study",
                                                               "BIDSVersion": "1.8.0"}))
    (root / f"task-{STUDY_TASK}_bold.json").write_text(json.dumps({"RepetitionTime": simulate.REFERENCE_T_R,
                                                                  "TaskName": STUDY_TASK}))
    (root / "truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True))
    return root


def study_runs(root: str | Path, task: str, subjects: list[str] | str = "all") -> list[tuple[str, str]]:
    """``(subject, run)`` pairs of a BIDS dataset for ``task`` (run ``""`` when a subject has a single run)."""
    import re

    root = Path(root)
    found = sorted(p.name[4:] for p in root.glob("sub-*") if p.is_dir())
    wanted = found if subjects == "all" else [str(s) for s in subjects]
    missing = [s for s in wanted if s not in found]
    if missing:
        raise ValueError(f"{root}: no folder for subject(s) {', '.join(missing)}; subjects found: "
                         f"{', '.join(found) or 'none'}")
    pairs = []
    for sub in wanted:
        events = sorted((root / f"sub-{sub}").rglob(f"sub-{sub}*_task-{task}*_events.tsv"))
        runs = sorted({m.group(1) for e in events if (m := re.search(r"_run-([A-Za-z0-9]+)_", e.name))})
        pairs += [(sub, r) for r in runs] if runs else [(sub, "")]
    return pairs


# ----------------------------------------------------------------------------- first levels

@dataclass(frozen=True)
class RunOutcome:
    """One run's first level: where its outputs are, or why it was left out."""

    subject: str
    run: str
    output_dir: str
    ok: bool
    reason: str = ""
    n_scans: int = 0
    dof: float = 0.0
    effect_path: str = ""
    variance_path: str = ""


def _first_level(config: Config, subject: str, run: str, out: str, contrast: str) -> RunOutcome:
    """One Dask task: the single-run analysis of ``sub-<subject>`` ``run-<run>`` (bad input is an outcome)."""
    from .pipeline import run as run_analysis

    cfg = config.replace(bids={"subject": subject, "run": run}, output={"dir": out})
    try:
        res = run_analysis(cfg)
    except ValueError as exc:  # DataError, ConfigError, ContrastError: the run's one-line error
        return RunOutcome(subject, run, out, False, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    c = res.contrast(contrast)
    return RunOutcome(subject, run, out, True, n_scans=res.dataset.n_scans, dof=float(res.model.dof),
                      effect_path=str(res.path(c.files["effect"])), variance_path=str(res.path(c.files["variance"])))


# ----------------------------------------------------------------------------- group level

@dataclass(frozen=True)
class GroupResult:
    """The group level of one contrast: which subjects entered, the map, its thresholds and the DMN test."""

    contrast: str
    subjects: tuple[str, ...]
    excluded: dict[str, str]
    runs: tuple[RunOutcome, ...]
    z_path: str
    effect_paths: dict[str, str]
    thresholds: tuple = ()
    clusters: pd.DataFrame = field(default_factory=pd.DataFrame)
    dmn_effects: dict[str, float] = field(default_factory=dict)
    dmn_t: float = float("nan")
    dmn_p: float = float("nan")

    @property
    def n_subjects(self) -> int:
        return len(self.subjects)

    def threshold(self, key: str):
        return next(t for t in self.thresholds if t.key == key)


def run_study(config: Config, out: str | Path, *, subjects: list[str] | str = "all", contrast: str | None = None,
              n_workers: int | None = None, scheduler: str | None = None, strict: bool = False,
              memory_limit: str = "4GiB", dmn_mask_img=None, smoothing_fwhm: float = 0.0) -> GroupResult:
    """Every run's first level as a Dask task, fixed effects per subject, then the group level.

    Parameters
    ----------
    config : Config
        The single-run configuration (``data.dataset = "bids"``, ``bids.root``, ``bids.task``, ``bids.space``);
        ``bids.subject`` and ``bids.run`` are set per task.
    out : path
        Study output folder: ``sub-<label>[/run-<label>]`` per run, ``group/`` for the group level.
    n_workers : int, optional
        Workers of the ``LocalCluster`` started when no ``scheduler`` is given (default: the machine's cores).
    scheduler : str, optional
        Address of an existing Dask scheduler (e.g. a ``dask-jobqueue`` SLURM cluster).
    strict : bool
        Make a run with bad input an error instead of leaving it out.
    dmn_mask_img : Nifti1Image, optional
        The network for the group DMN test (default: Yeo 2011 network 7 from the atlas data).
    """
    import os

    import dask
    from distributed import Client, LocalCluster, as_completed

    out = Path(out).resolve()
    contrast = contrast or next(iter(config.contrasts))
    pairs = study_runs(config.bids.root, config.bids.task, subjects)
    with dask.config.set({"distributed.worker.daemon": False}):  # the first levels start figure processes
        cluster = None if scheduler else LocalCluster(
            n_workers=n_workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
            memory_limit=memory_limit, dashboard_address=None)
        try:
            with Client(scheduler or cluster) as client:
                futures = [client.submit(_first_level, config, sub, run,
                                         str(out / f"sub-{sub}" / (f"run-{run}" if run else "")), contrast,
                                         key=f"first-level-sub-{sub}-run-{run or '1'}", retries=2, pure=False)
                           for sub, run in pairs]
                outcomes = []
                for i, fut in enumerate(as_completed(futures), 1):
                    outcomes.append(fut.result())
                    o = outcomes[-1]
                    log.info("[%d/%d] sub-%s%s: %s", i, len(futures), o.subject, f" run-{o.run}" if o.run else "",
                             "done" if o.ok else f"left out ({o.reason})")
        finally:
            if cluster is not None:
                cluster.close()
    outcomes.sort(key=lambda o: (o.subject, o.run))
    bad = [o for o in outcomes if not o.ok]
    if bad and strict:
        raise ValueError(f"sub-{bad[0].subject}: {bad[0].reason}")
    return group_level(outcomes, config, out / "group", contrast, dmn_mask_img=dmn_mask_img,
                       smoothing_fwhm=smoothing_fwhm)


def group_level(outcomes: list[RunOutcome], config: Config, out: Path, contrast: str, *,
                dmn_mask_img=None, smoothing_fwhm: float = 0.0) -> GroupResult:
    """Fixed effects over each subject's runs, then a one-sample t test over subjects (nilearn)."""
    import nibabel as nib
    from nilearn.glm import compute_fixed_effects
    from nilearn.glm.second_level import SecondLevelModel
    from nilearn.image import resample_to_img
    from scipy import stats

    from . import inference

    out.mkdir(parents=True, exist_ok=True)
    excluded = {o.subject: o.reason for o in outcomes if not o.ok}
    by_subject: dict[str, list[RunOutcome]] = {}
    for o in outcomes:
        if o.ok and o.subject not in excluded:
            by_subject.setdefault(o.subject, []).append(o)
    if len(by_subject) < 2:
        raise ValueError(f"{out}: only {len(by_subject)} subject(s) with usable runs; a group test needs at least 2")
    effects, masks = {}, []
    for sub, runs in sorted(by_subject.items()):
        con = [nib.load(r.effect_path) for r in runs]
        var = [nib.load(r.variance_path) for r in runs]
        inside = np.all([np.asarray(v.dataobj) > 0 for v in var], axis=0)  # every run's mask
        masks.append(inside)
        if len(runs) == 1:
            effects[sub] = con[0]
        else:  # fixed effects across the subject's runs (precision-weighted, as FSL's FEAT does)
            run_mask = nib.Nifti1Image(inside.astype(np.uint8), con[0].affine)
            effects[sub] = compute_fixed_effects(con, var, mask=run_mask, precision_weighted=True,
                                                 dofs=[r.dof for r in runs])[0]
    for sub, img in effects.items():
        nib.save(img, out / f"sub-{sub}_contrast-{contrast}_stat-effect_statmap.nii.gz")
    first = next(iter(effects.values()))
    mask = nib.Nifti1Image(np.all(masks, axis=0).astype(np.uint8), first.affine)
    design = pd.DataFrame({"intercept": np.ones(len(effects))})
    model = SecondLevelModel(mask_img=mask, smoothing_fwhm=smoothing_fwhm or None, minimize_memory=True).fit(list(effects.values()), design_matrix=design)
    z_img = model.compute_contrast(np.array([1.0]), output_type="z_score")  # numbers only, never a string
    z_path = out / f"contrast-{contrast}_stat-z_statmap.nii.gz"
    nib.save(z_img, z_path)
    thr = inference.threshold_all(z_img, mask, config.inference)
    primary_img, primary = thr[config.inference.primary]
    clusters, _ = inference.cluster_table(z_img, primary, config.inference.min_distance, mask_img=mask)
    clusters.to_csv(out / f"contrast-{contrast}_clusters.tsv", sep="\t", index=False, float_format="%.6g")

    # the DMN across subjects: each subject's mean effect in the network, one-sample t test against 0
    dmn_effects: dict[str, float] = {}
    if dmn_mask_img is not None:
        net = np.asarray(resample_to_img(dmn_mask_img, first, interpolation="nearest", force_resample=True,
                                         copy_header=True).dataobj) > 0
        inside = net & (np.asarray(mask.dataobj) > 0)
        dmn_effects = {s: float(np.asarray(img.dataobj)[inside].mean()) for s, img in effects.items()}
    t = p = float("nan")
    if len(dmn_effects) >= 2:
        res = stats.ttest_1samp(list(dmn_effects.values()), 0.0)
        t, p = float(res.statistic), float(res.pvalue)
    (out / "group.json").write_text(json.dumps(
        {"contrast": contrast, "subjects": sorted(effects), "excluded": excluded,
         "thresholds": {k: {"z_threshold": r.z_threshold if np.isfinite(r.z_threshold) else None,
                            "n_pos": r.n_pos, "n_neg": r.n_neg} for k, (_, r) in thr.items()},
         "dmn": {"effects": dmn_effects, "t": t if np.isfinite(t) else None, "p": p if np.isfinite(p) else None}},
        indent=1, sort_keys=True), encoding="utf-8")
    return GroupResult(contrast=contrast, subjects=tuple(sorted(effects)), excluded=excluded, runs=tuple(outcomes),
                       z_path=str(z_path), effect_paths={s: str(out / f"sub-{s}_contrast-{contrast}_stat-effect_statmap.nii.gz")
                                                         for s in effects},
                       thresholds=tuple(r for _, r in thr.values()), clusters=clusters, dmn_effects=dmn_effects,
                       dmn_t=t, dmn_p=p)
