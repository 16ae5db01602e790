"""``run(config) -> Results``: the orchestration of the analysis, the only place that writes results.

Outputs (under ``config.output.dir``), named by BIDS entities (:mod:`analysis.derivatives`)::

    derivatives/  a BIDS derivatives dataset: maps and masks with JSON sidecars, dataset_description.json
    tables/       TSV tables (clusters, design, motion)
    figures/      PNG figures, each drawn from the saved results and derivatives (analysis.figures.draw)
    results/      results.json (the typed Results tree; read by the chapters) and the manifest

A generation is staged and published whole (:mod:`analysis.outputs`), under a lock; results are cached
(:mod:`analysis.cache`). A change of the figure code redraws the figures from the saved results, never refits.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__, data, outputs, stages
from .cache import (RENDER_ONLY, RESULTS_FILE, cache_dir, code_fingerprint, compute_cache_key, figures_fingerprint,
                    input_checksums, valid_cached)
from .config import Config, load_config
from .derivatives import RunEntities, write_dataset_description
from .figures import draw
from .results import DatasetInfo, InputFile, ModelInfo, Results, StatmapInfo

__all__ = ["run", "redraw", "check", "check_design", "cache_dir", "load_results", "package_versions", "OUTPUT_FOLDERS",
           "compute_cache_key", "code_fingerprint", "figures_fingerprint", "RENDER_ONLY"]

log = logging.getLogger("analysis")

OUTPUT_FOLDERS = outputs.OUTPUT_FOLDERS


# ----------------------------------------------------------------------------- the analysis

def load_results(config: Config | str | Path | None = None) -> Results:
    """Results for the config, computed once and then read from the cache.

    Chapters call this; it never refits when the cached results are still valid.
    """
    return run(config)


def run(config: Config | str | Path | None = None, *, force: bool = False) -> Results:
    """Run the whole analysis (or return the valid cached results).

    Parameters
    ----------
    config : Config, path or None
        A Config, a TOML path, or None for ``analysis.toml`` / the defaults.
    force : bool
        Recompute even when the cache is valid.

    Returns
    -------
    Results
    """
    if not isinstance(config, Config):
        config = load_config(config)
    out = Path(config.output.dir).resolve()
    cache = cache_dir(config)
    outputs.check_output_dir(out, _project_dirs())
    outputs.check_cache_dir(cache, out)
    _check_writable(out)
    cache.mkdir(parents=True, exist_ok=True)
    if not force:
        cached = valid_cached(config, out)
        if cached is not None and cached.figures_code == figures_fingerprint():
            log.info("results are up to date (cache key %s)", cached.cache_key[:12])
            return cached
    outputs.check_owned(out)  # before any computation: never replace what the project did not write
    with outputs.lock(cache / "analysis.lock"):
        if not force:  # another process may have finished while we waited
            cached = valid_cached(config, out)
            if cached is not None:
                if cached.figures_code == figures_fingerprint():
                    return cached
                log.info("the figure code changed: redrawing the figures from the saved results")
                return _redraw_generation(out, cached)
        outputs.remove_stale(out)  # left by a killed run (only folders carrying our marker)
        stage = outputs.new_stage(out)
        try:
            _compute(config, stage, out)
            outputs.write_manifest(stage)
            outputs.publish(stage, out)
        finally:
            outputs.discard(stage)
    return Results.from_json(out / RESULTS_FILE, output_dir=out)


def redraw(config: Config | str | Path | None = None) -> list[Path]:
    """Redraw every figure from the saved results and derivatives, without fitting (``fmri-report redraw``).

    The figures are byte-identical to the run's when the figure code has not changed. Returns their paths.

    Raises
    ------
    DataError
        One line when there are no results to redraw from, or they were changed since the run.
    """
    if not isinstance(config, Config):
        config = load_config(config)
    out = Path(config.output.dir).resolve()
    outputs.check_output_dir(out, _project_dirs())
    path = out / RESULTS_FILE
    if not path.exists():
        raise data.DataError(f"{path}: no results to redraw the figures from; run the analysis first "
                             "(fmri-report run)")
    outputs.check_owned(out)
    if not outputs.verify(out):
        raise data.DataError(f"{out}: the outputs differ from the manifest of the run that wrote them; run the "
                             "analysis again (fmri-report run --force)")
    cache = cache_dir(config)
    cache.mkdir(parents=True, exist_ok=True)
    with outputs.lock(cache / "analysis.lock"):
        results = _redraw_generation(out, Results.from_json(path, output_dir=out))
    return [out / rel for rel in results.figures.values()]


def _redraw_generation(out: Path, results: Results) -> Results:
    """A new generation: the files of the current one with every figure drawn again from them."""
    from .figures.parallel import FigurePool

    outputs.remove_stale(out)
    stage = outputs.new_stage(out)
    try:
        for rel in outputs.read_manifest(out) or {}:
            if rel.startswith(draw.FIGURES + "/") or rel == outputs.MANIFEST.as_posix():
                continue
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(out / rel, stage / rel)
        specs = draw.figure_specs(results)
        new = dataclasses.replace(results, figures={s.role: s.path for s in specs}, figures_code=figures_fingerprint())
        (stage / RESULTS_FILE).write_text(new.to_json(), encoding="utf-8")
        _step(f"drawing {len(specs)} figures from the saved results")
        with FigurePool() as pool:
            for spec in specs:
                pool.submit(draw.draw_spec, spec, str(stage))
            pool.results()
        outputs.write_manifest(stage)
        outputs.publish(stage, out)
    finally:
        outputs.discard(stage)
    return Results.from_json(out / RESULTS_FILE, output_dir=out)


def _project_dirs() -> list[Path]:
    """The folders whose source subfolders may never be output folders: here, and the package's project."""
    return [Path.cwd().resolve(), Path(__file__).resolve().parents[1]]


def check_design(run: data.Run, config: Config) -> pd.DataFrame:
    """The design matrix of ``run``, after checking that its columns are distinct and every contrast fits it.

    Raises
    ------
    DataError, ContrastError
        One line naming the events file or the contrast and the fix.
    """
    from . import glm

    events_file = next((p for n, p in run.files.items() if n.endswith("events.tsv")), "events")
    conditions = sorted(run.events["trial_type"].unique())
    if run.confounds is not None:
        clash = sorted(set(conditions) & {str(c) for c in run.confounds.columns})
        if clash:
            raise data.DataError(f"{events_file}: condition(s) {', '.join(map(repr, clash))} have the name of a "
                                 "confound column; rename the condition(s)")
    design = glm.make_design(run.events, run.n_scans, config.glm, confounds=run.confounds)
    dup = sorted({str(c) for c in design.columns[design.columns.duplicated()]})
    if dup:
        raise data.DataError(f"{events_file}: the design matrix would hold column(s) {', '.join(map(repr, dup))} "
                             "twice (a condition named like a derivative, drift or confound column); rename the "
                             "condition(s)")
    for name, expr in config.contrasts.items():
        try:
            glm.check_contrast(expr, design, conditions, name)
        except glm.ContrastError as exc:
            raise glm.ContrastError(f"{config.source}: [contrasts] {exc}") from None
    return design


def check(config: Config | str | Path | None = None) -> str:
    """Validate the configuration, the inputs, the events and the contrasts without fitting anything.

    Returns a one-line summary; raises the same one-line errors as :func:`run`.
    """
    if not isinstance(config, Config):
        config = load_config(config)
    out = Path(config.output.dir).resolve()
    cache = cache_dir(config)
    outputs.check_output_dir(out, _project_dirs())
    outputs.check_cache_dir(cache, out)
    if out.exists():
        outputs.check_owned(out)
    if config.data.dataset == "statmap":
        from .statmap import load_statmap

        sm = load_statmap(config)
        return f"{sm.path}: {sm.stat} map, {int(np.count_nonzero(np.asarray(sm.mask_img.dataobj)))} voxels in the mask"
    run = data.load_run(config, cache_dir=cache)
    data.read_bold(run)  # a truncated or corrupt run, or a mask on another grid, is named here
    stages.check_t_r(run, config)
    design = check_design(run, config.replace(glm={"t_r": run.t_r}))
    return (f"{run.dataset}: {run.n_scans} volumes, TR {run.t_r:g} s, {design.shape[1]} design columns, "
            f"{len(config.contrasts)} contrast(s) valid")


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise data.DataError(f"{out}: output folder cannot be written ({exc.strerror}); "
                             "set output.dir in the config to a writable folder") from None


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _compute(config: Config, stage: Path, out: Path) -> Results:
    from .figures.parallel import FigurePool, beside_analysis_n_jobs

    # one drawing process beside the analysis; none without figures
    with FigurePool(beside_analysis_n_jobs() if config.output.figures else 0) as pool:
        return _compute_with(config, stage, out, pool)


def _compute_with(config: Config, stage: Path, out: Path, pool) -> Results:

    from . import glm  # nilearn.glm: imported before the figure workers fork, so they share it

    pool.start()  # the workers import the plotting modules while the data load
    t0 = time.perf_counter()
    if config.data.dataset == "statmap":
        results = _compute_statmap(config, stage, out, pool)
        log.info("analysis finished in %.1f s", time.perf_counter() - t0)
        return results

    _step("loading data")
    run = data.load_run(config, cache_dir=cache_dir(config))
    if run.is_fallback:
        log.warning("THIS REPORT USES SIMULATED DATA: %s", run.fallback_reason)
    t_r_header = stages.check_t_r(run, config)
    check_design(run, config.replace(glm={"t_r": run.t_r}))  # events and contrasts, before any computation
    config_key = config
    config = config.replace(glm={"t_r": run.t_r})  # from here on the TR is the data's (checked above)
    w = stages.Writer(stage, pool, RunEntities(**run.entities, space=run.space), figures=config.output.figures)
    raw = run  # as acquired: the data chapter describes it; preprocessing may move it to MNI space
    run, preprocessing = stages.preprocess(config, run, w)
    w.entities = w.entities.with_space(run.space)
    if run is not raw:
        stages.data_derivatives(w, raw)  # drawn while the analysis goes on
    _step("reading the run: brain mask and one voxel-by-time matrix")
    matrix = data.read_bold(run)  # the one read of the run: every stage below works from it or from the model
    # the input checksums; the run's file was hashed as it was read
    checksums = input_checksums(dict(sorted(run.files.items())), cache_dir(config), known=matrix.file_sha256)
    key = compute_cache_key(config_key, checksums)
    if run is raw:
        stages.data_derivatives(w, raw, matrix)
    bold = matrix

    _step("building the design matrix")
    design = check_design(run, config)
    conditions = sorted(run.events["trial_type"].unique())
    design_path = w.table(design.rename_axis("frame_time"), "design", "design", index=True)
    cmat = glm.contrast_matrix(config.contrasts, design)
    w.draw(draw.design_specs(cmat, design_path, w.entities))

    _step(f"fitting the GLM ({config.glm.noise_model} noise model)")
    mask = matrix.mask_report
    model = stages.fit_model(run, matrix, design, config)
    mask_img = mask.mask_img
    maps = glm.compute_contrasts(model, design, config.contrasts, conditions)
    residual_dof = float(run.n_scans - np.linalg.matrix_rank(design.to_numpy()))
    rft_inference = stages.rft_from_model(config, model, mask_img, residual_dof)  # smoothness from the residuals

    bg_img = draw.background_for(run.space, w.files)
    atlases = stages.label_atlases(config, run.space)

    _step("thresholding, cluster tables and map figures")
    contrast_results, thresholded = {}, {}
    for i, (name, m) in enumerate(maps.items()):
        contrast_results[name], thresholded[name] = stages.infer_contrast(
            w, config, name, m.expression, glm.describe_direction(m.expression, conditions), m.z_img, mask_img,
            space=run.space, atlases=atlases, bg_img=bg_img, vector=m.vector, effect_img=m.effect_img,
            variance_img=m.variance_img, truth=run.truth, viewer=i == 0,  # the downloads chapter shows the main contrast interactively
            rft=rft_inference)

    # the DMN step before the calibration: its figures are the heavier ones, and the drawing processes get them
    # while the calibration runs
    dmn = calibration = None
    if config.dmn.enabled:
        first = next(iter(contrast_results.values()))
        dmn = stages.dmn_analysis(config, run, bold, design, maps[first.name], first, mask.mask_img, w, bg_img, model,
                   thresholded[first.name], atlases=atlases)
    if config.calibration.enabled:
        calibration = stages.calibrate(config, bold, design, mask.mask_img, model, w, run)

    raw_bold = raw.bold_img
    if run is raw:
        value_min, value_max = matrix.value_min, matrix.value_max
    else:
        arr = np.asarray(raw_bold.dataobj)
        value_min, value_max = stages.finite_extreme(arr, np.min), stages.finite_extreme(arr, np.max)
        del arr
    dataset = DatasetInfo(
        dataset=run.dataset, description=run.description, space=run.space, is_simulated=run.is_simulated,
        fallback_reason=run.fallback_reason, shape=tuple(int(s) for s in raw_bold.shape),
        voxel_size=tuple(float(z) for z in raw_bold.header.get_zooms()[:3]), dtype=str(raw_bold.get_data_dtype()),
        value_min=value_min, value_max=value_max, n_scans=run.n_scans, t_r=run.t_r,
        t_r_header=t_r_header, has_anat=raw.anat_img is not None, events=run.events, t_r_source=run.t_r_source,
        acquired_space=raw.space, median_tsnr=_finite_or_none(matrix.median_tsnr()),
        files={n: InputFile(path=str(Path(p).resolve()), sha256=checksums[n]) for n, p in sorted(run.files.items())})
    drift_cols = [c for c in design.columns if c.startswith("drift") or c.startswith("cosine")]
    model_info = ModelInfo(
        noise_model=config.glm.noise_model, hrf_model=config.glm.hrf_model, drift_model=config.glm.drift_model,
        high_pass=config.glm.high_pass, smoothing_fwhm=config.glm.smoothing_fwhm,
        signal_scaling=config.glm.signal_scaling, standardize=config.glm.standardize,
        design_columns=tuple(design.columns), conditions=tuple(conditions), n_drift=len(drift_cols),
        dof=float(run.n_scans - np.linalg.matrix_rank(design.to_numpy())),
        n_mask_voxels=int(np.count_nonzero(np.asarray(mask_img.dataobj))),
        mask_source=mask.source, n_excluded_nonfinite=mask.n_nonfinite, n_excluded_constant=mask.n_constant,
        contrast_matrix=cmat)
    versions = package_versions()
    results = Results(cache_key=key, config=config, dataset=dataset, model=model_info, contrasts=contrast_results,
                      figures=w.figures, versions=versions, atlas=stages.atlas_info(atlases, run.space),
                      rft=rft_inference, preprocessing=preprocessing, dmn=dmn, calibration=calibration,
                      entities=dict(run.entities), files=dict(w.files), figures_code=figures_fingerprint(),
                      output_dir=str(out))
    write_dataset_description(stage, version=__version__, source=run.description, versions=versions)
    w.wait(results)
    (stage / RESULTS_FILE).write_text(results.to_json(), encoding="utf-8")
    log.info("analysis finished in %.1f s", time.perf_counter() - t0)
    return results


def _compute_statmap(config: Config, stage: Path, out: Path, pool) -> Results:
    """Inference, labelled clusters, DMN overlap and prose from an existing z or t map (no time series)."""
    import nibabel as nib
    from .figures import MNI_BACKGROUND
    from .statmap import load_statmap

    _step("loading the statistical map")
    sm = load_statmap(config)
    name = Path(sm.path).name
    smooth_files = {f"{key}:{Path(f).name}": str(stages.existing_file(f, f"statmap.{key}"))  # in the cache key, as the map
                    for key, f in (("rpv", config.statmap.rpv), ("smoothness_file", config.statmap.smoothness_file))
                    if f}
    checksums = input_checksums({name: sm.path, **smooth_files}, cache_dir(config))
    key = compute_cache_key(config, checksums)
    w = stages.Writer(stage, pool, RunEntities(space=sm.space), figures=config.output.figures)
    bg_img = MNI_BACKGROUND
    atlases = stages.label_atlases(config, sm.space)
    rft_inference = stages.rft_from_statmap(config, sm)
    _step("thresholding, cluster tables and map figures")
    contrast, thresholded = stages.infer_contrast(
        w, config, sm.contrast, sm.contrast, sm.direction, sm.z_img, sm.mask_img, space=sm.space,
        atlases=atlases, bg_img=bg_img,
        extra_sidecar={"Source": sm.source, "SourceFile": name, "SourceStatistic": sm.stat,
                       "DegreesOfFreedom": sm.dof or None}, viewer=True, rft=rft_inference)
    dmn_overlap = None
    if config.dmn.enabled:
        _step("overlap with the Default Mode Network")
        dmn_overlap = stages.dmn_overlap(config, sm.mask_img, contrast, w, bg_img, thresholded)
    src_img = nib.load(sm.path)
    src = np.asarray(src_img.dataobj, dtype=np.float64)
    finite = src[np.isfinite(src)]
    img = sm.z_img
    dataset = DatasetInfo(
        dataset="statmap", description=f"the statistical map {name} ({sm.source})", space=sm.space,
        is_simulated=False, fallback_reason="", shape=tuple(int(v) for v in img.shape),
        voxel_size=tuple(float(v) for v in img.header.get_zooms()[:3]),
        dtype=str(src_img.get_data_dtype()), value_min=float(finite.min()), value_max=float(finite.max()),
        n_scans=0, t_r=0.0, t_r_header=0.0, has_anat=False,
        events=pd.DataFrame(columns=["onset", "duration", "trial_type"]),
        files={name: InputFile(path=sm.path, sha256=checksums[name])})
    versions = package_versions()
    results = Results(cache_key=key, config=config, dataset=dataset, model=None,
                      contrasts={sm.contrast: contrast}, figures=w.figures, versions=versions,
                      atlas=stages.atlas_info(atlases, sm.space), rft=rft_inference,
                      rft_reason="" if rft_inference is not None else (
                          "a statistical map has no residuals to estimate its smoothness from, and none was given"),
                      dmn_overlap=dmn_overlap,
                      statmap=StatmapInfo(path=sm.path, stat=sm.stat, dof=sm.dof, source=sm.source,
                                          coverage=sm.coverage, conversion=sm.conversion),
                      files=dict(w.files), figures_code=figures_fingerprint(), output_dir=str(out))
    write_dataset_description(stage, version=__version__, source=f"the statistical map {name}", versions=versions)
    w.wait(results)
    (stage / RESULTS_FILE).write_text(results.to_json(), encoding="utf-8")
    return results


def package_versions() -> dict[str, str]:
    """Python and the versions of the packages that computed the results (the colophon, the study)."""
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version(), "analysis": __version__}
    for pkg in ("nilearn", "nibabel", "numpy", "scipy", "pandas", "matplotlib", "scikit-learn", "jinja2"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _step(message: str) -> None:
    log.info(message)


def main_logging() -> None:
    """Console progress for ``python -m analysis``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[analysis %(asctime)s] %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
