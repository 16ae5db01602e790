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

from . import __version__, data, outputs
from .cache import (RENDER_ONLY, RESULTS_FILE, cache_dir, code_fingerprint, compute_cache_key, figures_fingerprint,
                    input_checksums, valid_cached)
from .config import Config, ConfigError, load_config
from .derivatives import RunEntities, bids_name, write_dataset_description, write_image
from .figures import draw
from .results import (AtlasInfo, CalibrationResults, ContrastResult, DatasetInfo, DMNAnalysis, DMNOverlapSummary,
                      InputFile, ModelInfo, Preprocessing, PreprocessingContext, Results, StatmapInfo)

__all__ = ["run", "redraw", "check", "check_design", "cache_dir", "load_results", "OUTPUT_FOLDERS",
           "compute_cache_key", "code_fingerprint", "figures_fingerprint", "RENDER_ONLY"]

log = logging.getLogger("analysis")

OUTPUT_FOLDERS = outputs.OUTPUT_FOLDERS


# ----------------------------------------------------------------------------- public API

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
    _check_t_r(run, config)
    design = check_design(run, config.replace(glm={"t_r": run.t_r}))
    return (f"{run.dataset}: {run.n_scans} volumes, TR {run.t_r:g} s, {design.shape[1]} design columns, "
            f"{len(config.contrasts)} contrast(s) valid")


# ----------------------------------------------------------------------------- cache

def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise data.DataError(f"{out}: output folder cannot be written ({exc.strerror}); "
                             "set output.dir in the config to a writable folder") from None


# ----------------------------------------------------------------------------- the analysis

def _compute(config: Config, stage: Path, out: Path) -> Results:
    from .figures.parallel import FigurePool

    with FigurePool() as pool:
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
    t_r_header = _check_t_r(run, config)
    check_design(run, config.replace(glm={"t_r": run.t_r}))  # events and contrasts, before any computation
    config_key = config
    config = config.replace(glm={"t_r": run.t_r})  # from here on the TR is the data's (checked above)
    w = _Writer(stage, pool, RunEntities(**run.entities, space=run.space))
    raw = run  # as acquired: the data chapter describes it; preprocessing may move it to MNI space
    run, preprocessing = _preprocess(config, run, w)
    w.entities = w.entities.with_space(run.space)
    if run is not raw:
        _data_derivatives(w, raw)  # drawn while the analysis goes on
    _step("reading the run: brain mask and one voxel-by-time matrix")
    matrix = data.read_bold(run)  # the one read of the run: every stage below works from it or from the model
    # the input checksums; the run's file was hashed as it was read
    checksums = input_checksums(dict(sorted(run.files.items())), cache_dir(config), known=matrix.file_sha256)
    key = compute_cache_key(config_key, checksums)
    if run is raw:
        _data_derivatives(w, raw, matrix)
    bold = matrix

    _step("building the design matrix")
    design = check_design(run, config)
    conditions = sorted(run.events["trial_type"].unique())
    design_path = w.table(design.rename_axis("frame_time"), "design", "design", index=True)
    cmat = glm.contrast_matrix(config.contrasts, design)
    w.draw(draw.design_specs(cmat, design_path, w.entities))

    _step(f"fitting the GLM ({config.glm.noise_model} noise model)")
    mask = matrix.mask_report
    model = _fit(run, matrix, design, config)
    mask_img = mask.mask_img
    maps = glm.compute_contrasts(model, design, config.contrasts, conditions)
    residual_dof = float(run.n_scans - np.linalg.matrix_rank(design.to_numpy()))
    rft_inference = _rft_from_model(config, model, mask_img, residual_dof)  # smoothness from the residuals

    bg_img = draw.background_for(run.space, w.files)
    atlases = _label_atlases(config, run.space)

    _step("thresholding, cluster tables and map figures")
    contrast_results, thresholded = {}, {}
    for i, (name, m) in enumerate(maps.items()):
        contrast_results[name], thresholded[name] = _infer_contrast(
            w, config, name, m.expression, glm.describe_direction(m.expression, conditions), m.z_img, mask_img,
            space=run.space, atlases=atlases, bg_img=bg_img, vector=m.vector, effect_img=m.effect_img,
            variance_img=m.variance_img, truth=run.truth, viewer=i == 0,  # the downloads chapter shows the main contrast interactively
            rft=rft_inference)

    # the DMN step before the calibration: its figures are the heavier ones, and the drawing processes get them
    # while the calibration runs
    dmn = calibration = None
    if config.dmn.enabled:
        first = next(iter(contrast_results.values()))
        dmn = _dmn(config, run, bold, design, maps[first.name], first, mask.mask_img, w, bg_img, model,
                   thresholded[first.name], atlases=atlases)
    if config.calibration.enabled:
        calibration = _calibrate(config, bold, design, mask.mask_img, model, w, run)

    raw_bold = raw.bold_img
    if run is raw:
        value_min, value_max = matrix.value_min, matrix.value_max
    else:
        arr = np.asarray(raw_bold.dataobj)
        value_min, value_max = _finite(arr, np.min), _finite(arr, np.max)
        del arr
    dataset = DatasetInfo(
        dataset=run.dataset, description=run.description, space=run.space, is_simulated=run.is_simulated,
        fallback_reason=run.fallback_reason, shape=tuple(int(s) for s in raw_bold.shape),
        voxel_size=tuple(float(z) for z in raw_bold.header.get_zooms()[:3]), dtype=str(raw_bold.get_data_dtype()),
        value_min=value_min, value_max=value_max, n_scans=run.n_scans, t_r=run.t_r,
        t_r_header=t_r_header, has_anat=raw.anat_img is not None, events=run.events, t_r_source=run.t_r_source,
        acquired_space=raw.space,
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
    versions = _versions()
    results = Results(cache_key=key, config=config, dataset=dataset, model=model_info, contrasts=contrast_results,
                      figures=w.figures, versions=versions, atlas=_atlas_info(atlases, run.space),
                      rft=rft_inference, preprocessing=preprocessing, dmn=dmn, calibration=calibration,
                      entities=dict(run.entities), files=dict(w.files), figures_code=figures_fingerprint(),
                      output_dir=str(out))
    write_dataset_description(stage, version=__version__, source=run.description, versions=versions)
    w.wait(results)
    (stage / RESULTS_FILE).write_text(results.to_json(), encoding="utf-8")
    log.info("analysis finished in %.1f s", time.perf_counter() - t0)
    return results


def _data_derivatives(w: _Writer, raw: data.Run, matrix: data.BoldMatrix | None = None) -> None:
    """The first volumes and the mean image of the run as acquired (and its anatomical image), and their figures.

    From the summaries ``matrix`` kept when it read the run, when given (the run is not read again)."""
    if matrix is not None:
        first, mean = matrix.first_volumes_img(), matrix.mean_img()
    else:
        from nilearn.image import mean_img

        first, mean = raw.bold_img.slicer[..., :4], mean_img(raw.bold_img, copy_header=True)
    acquired = w.entities.with_space(raw.space)
    w.image("firstvolumes", first, acquired, "bold", {"Description": "the first volumes of the run as acquired"},
            desc="firstvolumes")
    w.image("mean", mean, acquired, "bold", {"Description": "mean over time of the run as acquired"}, desc="mean")
    if raw.anat_img is not None:
        w.image("anat", raw.anat_img, acquired, "T1w",
                {"Description": "the anatomical image as given"}, desc="anat")
    w.draw(draw.data_specs(w.files, acquired))


def _compute_statmap(config: Config, stage: Path, out: Path, pool) -> Results:
    """Inference, labelled clusters, DMN overlap and prose from an existing z or t map (no time series)."""
    import nibabel as nib
    from .figures import MNI_BACKGROUND
    from .statmap import load_statmap

    _step("loading the statistical map")
    sm = load_statmap(config)
    name = Path(sm.path).name
    smooth_files = {f"{key}:{Path(f).name}": str(_existing(f, f"statmap.{key}"))  # in the cache key, as the map
                    for key, f in (("rpv", config.statmap.rpv), ("smoothness_file", config.statmap.smoothness_file))
                    if f}
    checksums = input_checksums({name: sm.path, **smooth_files}, cache_dir(config))
    key = compute_cache_key(config, checksums)
    w = _Writer(stage, pool, RunEntities(space=sm.space))
    bg_img = MNI_BACKGROUND
    atlases = _label_atlases(config, sm.space)
    rft_inference = _rft_from_statmap(config, sm)
    _step("thresholding, cluster tables and map figures")
    contrast, thresholded = _infer_contrast(
        w, config, sm.contrast, sm.contrast, sm.direction, sm.z_img, sm.mask_img, space=sm.space,
        atlases=atlases, bg_img=bg_img,
        extra_sidecar={"Source": sm.source, "SourceFile": name, "SourceStatistic": sm.stat,
                       "DegreesOfFreedom": sm.dof or None}, viewer=True, rft=rft_inference)
    dmn_overlap = None
    if config.dmn.enabled:
        _step("overlap with the Default Mode Network")
        dmn_overlap = _dmn_overlap(config, sm.mask_img, contrast, w, bg_img, thresholded)
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
    versions = _versions()
    results = Results(cache_key=key, config=config, dataset=dataset, model=None,
                      contrasts={sm.contrast: contrast}, figures=w.figures, versions=versions,
                      atlas=_atlas_info(atlases, sm.space), rft=rft_inference,
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


def _rft_from_model(config: Config, model, mask_img, dof: float):
    """Random-field inference from the fitted model's whitened residuals (smoothness, resels, FWE thresholds)."""
    from . import rft
    from .noise import model_residual_rows

    inf = config.inference  # the residuals are computed plane by plane as the estimate reads them (never held whole)
    smoothness = rft.estimate_smoothness(model_residual_rows(model), mask_img, dof=dof,
                                         method=inf.smoothness_method)
    return rft.RFTInference.compute(smoothness, alpha=inf.alpha, cdt_alpha=inf.cdt_alpha, dof=dof,
                                    two_sided=inf.two_sided)


def _rft_from_statmap(config: Config, sm):
    """Random-field inference with the smoothness the user gave for the map (None when none was given)."""
    from . import rft

    cfg, inf = config.statmap, config.inference
    if cfg.fwhm:
        smoothness = rft.smoothness_from_fwhm(cfg.fwhm, sm.mask_img)
    elif cfg.rpv:
        smoothness = rft.smoothness_from_rpv(_existing(cfg.rpv, "statmap.rpv"), sm.mask_img)
    elif cfg.smoothness_file:
        smoothness = rft.smoothness_from_fsl(_existing(cfg.smoothness_file, "statmap.smoothness_file"), sm.mask_img)
    else:
        return None
    dof = float(sm.dof) if sm.stat == "t" and sm.dof else None
    return rft.RFTInference.compute(smoothness, alpha=inf.alpha, cdt_alpha=inf.cdt_alpha, dof=dof,
                                    two_sided=inf.two_sided)


def _existing(path: str, key: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{p}: file not found; check {key} in the config")
    return p


def _dmn_overlap(config: Config, mask_img, contrast: ContrastResult, w, bg_img, thresholded: dict) -> DMNOverlapSummary:
    """Without time series, the DMN can only be compared with the map by overlap.

    The overlap is counted on the very thresholded maps of the results chapter (``thresholded``:
    ``{key: (image, ThresholdResult)}``), at the primary threshold and at each of the others.
    """
    from .dmn import dmn_definitions, overlaps_by_threshold

    defs = dmn_definitions(data.nilearn_data_dir(config), node_radius=config.dmn.node_radius, control_network=None)
    if defs.main_img is None:
        return DMNOverlapSummary(available=False, reason="no DMN atlas could be loaded", source=defs.network_source)
    primary_img, primary = thresholded[contrast.primary_key]
    overlaps = overlaps_by_threshold(thresholded, defs.main_img, mask_img)
    w.image("dmn_mask", defs.main_img, w.entities, "mask", {"Description": f"the DMN: {defs.network_source}"},
            desc="dmn")
    ov = DMNOverlapSummary(available=True, source=defs.network_source, threshold=primary, overlaps=tuple(overlaps))
    w.draw(draw.dmn_overlap_specs(ov, contrast, w.files, w.entities, bg=bg_img))
    return ov


class _Writer:
    """Writes a generation's derivative maps and tables into the staging folder, and submits its figures.

    Every name carries the run's BIDS entities (:mod:`analysis.derivatives`); every map gets a JSON sidecar.
    Figures are drawn from those files (:mod:`analysis.figures.draw`), in worker processes when there is a pool.
    """

    def __init__(self, stage: Path, pool, entities: RunEntities):
        self.stage = stage
        self.pool = pool
        self.entities = entities
        self.files: dict[str, str] = {}  # run-level derivatives: role -> path relative to the output folder
        self.figures: dict[str, str] = {}  # role -> path relative to the output folder
        self._submitted: list[tuple[str, str, str]] = []

    def image(self, role: str | None, img, entities: RunEntities, suffix: str, sidecar: dict, **more) -> str:
        """Save a map (``entities`` + ``more`` name it) with its sidecar; record it under ``role`` if given."""
        space = entities.as_dict().get("space")
        rel = f"{entities.folder}/{bids_name(entities, suffix, '.nii.gz', **more)}"
        write_image(self.stage, img, rel, {**({"Space": space} if space else {}), **sidecar})
        if role:
            self.files[role] = rel
        return rel

    def table(self, df: pd.DataFrame, suffix: str, role: str | None = None, *, index: bool = False, **more) -> str:
        rel = f"tables/{bids_name(self.entities, suffix, '.tsv', **more)}"
        df.to_csv(self.stage / rel, sep="\t", index=index, float_format="%.6g")
        if role:
            self.files[role] = rel
        return rel

    def draw(self, specs) -> None:
        """Submit figures (:class:`analysis.figures.draw.FigureSpec`); their inputs are already written."""
        for spec in specs:
            self.figures[spec.role] = spec.path
            self._submitted.append((spec.role, spec.path, spec.func))
            if self.pool is None:
                draw.draw_spec(spec, self.stage)
            else:
                self.pool.submit(draw.draw_spec, spec, str(self.stage))

    def wait(self, results: Results) -> None:
        """Wait for every figure; check they are exactly those a redraw from ``results`` would draw."""
        planned = [(s.role, s.path, s.func) for s in draw.figure_specs(results)]
        if sorted(planned) != sorted(self._submitted):
            raise RuntimeError(f"the run drew {sorted(self._submitted)} but the results plan {sorted(planned)}")
        if self.pool is not None:
            _step("finishing the figures")
            self.pool.results()


def _atlas_info(atlases, space: str) -> AtlasInfo:
    """Caption and unavailable atlases of the label atlases, for the report."""
    if atlases is None:
        return AtlasInfo(space=space)
    from .atlas import label_caption, unavailable_atlases

    return AtlasInfo(caption=label_caption(atlases, space), unavailable=unavailable_atlases(atlases), space=space)


def _label_atlases(config: Config, space: str):
    if not space.startswith("MNI"):
        return None
    from .atlas import load_label_atlases

    return load_label_atlases(data.nilearn_data_dir(config))


def _infer_contrast(w: _Writer, config: Config, name: str, expression: str, direction: str, z_img, mask_img, *,
                    space: str, atlases, bg_img, vector=(), effect_img=None, truth=None,
                    extra_sidecar: dict | None = None, viewer: bool = False, variance_img=None,
                    rft=None) -> tuple[ContrastResult, dict]:
    """Thresholds, labelled cluster table, derivative maps and map figures of one contrast's z map.

    Returns the contrast's results and the thresholded maps, ``{key: (image, ThresholdResult)}``: the DMN
    step counts its overlap on these very maps.
    """
    from . import glm, inference

    ent = glm.entity(name)
    z_img = inference.mask_map(z_img, mask_img)  # the one map every threshold, table, figure and file reads
    thr = inference.threshold_all(z_img, mask_img, config.inference, None if rft is None else rft.cluster_extent)
    if config.inference.primary not in thr:  # cluster_fwe without random-field inference (a map without smoothness)
        raise ConfigError(f"inference.primary = {config.inference.primary!r} needs random-field inference, which "
                          "is not available: give the map's smoothness (statmap.fwhm, statmap.rpv or "
                          "statmap.smoothness_file) or choose another primary threshold")
    primary_img, primary = thr[config.inference.primary]
    clusters, label_img = inference.cluster_table(z_img, primary, config.inference.min_distance, mask_img)
    if not clusters.empty and atlases is not None:
        from .atlas import label_cluster_table

        clusters = label_cluster_table(clusters, label_img, atlases, space=space)
    if rft is not None:  # SPM's columns: cluster p(FWE), p(unc) at the table's height; peak p(FWE), q(FDR)
        from . import rft as rft_module

        in_mask = np.asarray(mask_img.dataobj) > 0
        clusters = rft_module.add_cluster_table_columns(clusters, z_img.get_fdata()[in_mask], primary.z_threshold,
                                                        rft)
    base = {"Contrast": name, "ContrastExpression": expression, **(extra_sidecar or {})}
    ents = w.entities
    unit = "% signal change" if config.glm.signal_scaling == 0 else "BOLD units"
    unthresholded = {"Thresholded": False, "Threshold": None}
    files = {"z": w.image(None, z_img, ents, "statmap", {**base, "Statistic": "z", **unthresholded},
                          contrast=ent, stat="z")}
    if effect_img is not None:
        files["effect"] = w.image(None, effect_img, ents, "statmap",
                                  {**base, "Statistic": "effect size", **unthresholded, "Units": unit},
                                  contrast=ent, stat="effect")
    if variance_img is not None:  # for fixed effects across runs and the group level (analysis.study)
        files["variance"] = w.image(None, variance_img, ents, "statmap",
                                    {**base, "Statistic": "variance of the effect size", **unthresholded,
                                     "Units": "(% signal change)^2" if config.glm.signal_scaling == 0
                                     else "BOLD units squared"}, contrast=ent, stat="variance")
    for key, (img, r) in thr.items():  # every threshold of the results chapter, as a map (desc = its key)
        files[f"thresholded.{key}"] = w.image(
            None, img, ents, "statmap",
            {**base, "Statistic": "z", "Thresholded": True, "Threshold": r.label,
             "ZThreshold": r.z_threshold if np.isfinite(r.z_threshold) else None,
             "ClusterExtent": r.spec.cluster_threshold, "Primary": key == config.inference.primary},
            contrast=ent, stat="z", desc=glm.entity(key))
    files["z_thresholded"] = files[f"thresholded.{config.inference.primary}"]
    if label_img is not None:
        files["clusters_img"] = w.image(
            None, label_img, ents, "dseg",
            {**base, "Description": "cluster number as in the cluster table", "Statistic": "z",
             "Thresholded": True, "Threshold": primary.label}, contrast=ent, desc="clusters")
    files["clusters"] = w.table(clusters, "clusters", contrast=ent)

    recovery = None
    if truth is not None:
        from . import simulate

        recovery = {k: float(v) for k, v in simulate.recovery(thr["fdr"][0], truth).items()}
    z = z_img.get_fdata()[np.asarray(mask_img.dataobj) > 0]

    result = ContrastResult(
        name=name, entity=ent, expression=expression, vector=tuple(vector),
        thresholds=tuple(r for _, r in thr.values()), primary_key=config.inference.primary,
        clusters=clusters, z_max=float(z.max()), z_min=float(z.min()), direction=direction, files=files,
        recovery=recovery)
    w.draw(draw.contrast_specs(result, ents, bg=bg_img, viewer=viewer,
                               effect_label="% signal change" if config.glm.signal_scaling == 0 else "effect"))
    return result, thr


def _preprocess(config: Config, run: data.Run, w: _Writer) -> tuple[data.Run, Preprocessing]:
    """Bring a native-space run into MNI152 space (ANTs), with motion confounds and QC figures.

    Returns the run to analyse and the record for the report (with the reason when preprocessing did not run).
    """
    import dataclasses

    from .space import TEMPLATE_SPACE

    cfg = config.preprocessing
    if cfg.mode == "on" and run.space != "native":  # never normalise twice
        raise data.DataError(f"{next(iter(run.files.values()), 'BOLD run')}: preprocessing.mode = \"on\" but the run is "
                             f"already in {run.space} space ({run.description}); normalising it again would resample "
                             "it twice: set preprocessing.mode = \"auto\", or bids.raw_space = \"native\" if it is "
                             "really in scanner space")
    if cfg.mode == "off" or (cfg.mode == "auto" and run.space != "native"):
        why = ("it is switched off in the configuration, preprocessing.mode = \"off\"" if cfg.mode == "off"
               else f"the data are already in {run.space} space")
        return run, Preprocessing(ran=False, reason=why, space=run.space)
    if run.anat_img is None:
        reason = "no anatomical image comes with the run, so it cannot be normalised to MNI152"
        if cfg.mode == "on":
            raise data.DataError(f"{next(iter(run.files.values()))}: {reason}; add a T1w image or set "
                                 "preprocessing.mode = \"off\"")
        log.warning("preprocessing skipped: %s", reason)
        return run, Preprocessing(ran=False, reason=reason, space=run.space)
    if cfg.smoothing_fwhm > 0 and config.glm.smoothing_fwhm > 0:
        raise data.DataError(f"{config.source}: both preprocessing.smoothing_fwhm and glm.smoothing_fwhm are set; "
                             "the data would be smoothed twice: set one of them to 0")
    try:
        import ants  # noqa: F401  (antspyx: is ANTs installed?)

        from . import preprocess as pp
    except ImportError:
        reason = "ANTs (the antspyx package) is not installed: pip install \"analysis[preprocess]\""
        if cfg.mode == "on":
            raise data.DataError(f"{config.source}: preprocessing.mode = \"on\" but {reason}") from None
        log.warning("preprocessing skipped: %s; the analysis stays in native space", reason)
        return run, Preprocessing(ran=False, reason=reason, space=run.space)

    _step(f"preprocessing: realignment, coregistration, {cfg.normalisation} normalisation to MNI152, smoothing")
    params = pp.PreprocessParams(smoothing_fwhm=cfg.smoothing_fwhm or None, normalisation=cfg.normalisation,
                                 realign_reference=cfg.realign_reference)
    pre = pp.preprocess(run.bold_img, run.anat_img, params)
    n_motion = {"none": 0, "6": 6, "6+derivatives": 12}[cfg.motion_confounds]
    confounds = run.confounds
    if n_motion:
        motion = pre.confounds(derivatives=n_motion == 12)
        confounds = motion if confounds is None else pd.concat([confounds.reset_index(drop=True), motion], axis=1)
    native, mni = w.entities.with_space(""), w.entities.with_space(TEMPLATE_SPACE)
    motion = pre.motion.assign(framewise_displacement=np.asarray(pre.fd, dtype=float))
    rel = f"tables/{bids_name(native, 'timeseries', '.tsv', desc='motion')}"
    motion.to_csv(w.stage / rel, sep="\t", index=False, float_format="%.6g")
    w.files["pre.motion"] = rel
    w.image("pre.mean", pre.mean_img, mni, "boldref", {"Description": "mean of the preprocessed run"}, desc="mean")
    w.image("pre.template", pre.template_img, mni, "T1w", {"Description": "the MNI152 template the run was "
                                                           "normalised to"}, desc="template")
    w.image("pre.coregistered", pre.coregistration.warped_img, native.with_space("T1w"), "boldref",
            {"Description": "mean functional image coregistered to the anatomical image"}, desc="coreg")
    w.image("pre.anat", pre.anat_img, native, "T1w", {"Description": "the anatomical image the run was "
                                                      "coregistered to"}, desc="preproc")
    w.image("pre.realigned", pre.realigned_img, native, "bold", {"Description": "the run realigned in scanner "
                                                                 "space (for the carpet plot)"}, desc="realigned")
    info = Preprocessing(ran=True, space=TEMPLATE_SPACE, native_space=run.space,
                         context=PreprocessingContext(**pre.context(motion_regressors=n_motion)),
                         timings={k: float(v) for k, v in pre.timings.items()},
                         motion_confounds=tuple(confounds.columns) if n_motion else ())
    w.draw(draw.qc_specs(info, w.files, mni, t_r=run.t_r))
    new = dataclasses.replace(run, bold_img=pre.bold_img, anat_img=pre.anat_mni_img, mask_img=pre.mask_img,
                              space=TEMPLATE_SPACE, confounds=confounds)
    return new, info


def _calibrate(config: Config, bold, design, mask_img, model, w, run=None) -> CalibrationResults:
    """Calibration of the main contrast's z map (and of the reference noise model, for comparison).

    The null designs put the run's task blocks in another order and are rebuilt by the same design builder as
    the real design (same HRF, drifts and confounds).
    """
    from . import glm
    from .calibration import calibrate

    name, expr = next(iter(config.contrasts.items()))
    cal_cfg = config.calibration
    null_kw = {"seed": config.data.seed}
    if run is not None:
        null_kw.update(events=run.events, design_fn=lambda ev: glm.make_design(ev, run.n_scans, config.glm,
                                                                               confounds=run.confounds))
    _step(f"calibration of the {config.glm.noise_model} z map ({cal_cfg.n_null} null designs)")
    main = calibrate(bold, design, mask_img, contrast=expr, t_r=config.glm.t_r, n_null=cal_cfg.n_null,
                     tolerance=cal_cfg.tolerance, model=model, **null_kw)
    ref = None
    if cal_cfg.reference_model and cal_cfg.reference_model != config.glm.noise_model:
        _step(f"calibration of the reference {cal_cfg.reference_model} model")
        ref = calibrate(bold, design, mask_img, contrast=expr, t_r=config.glm.t_r, n_null=cal_cfg.reference_n_null,
                        tolerance=cal_cfg.tolerance, noise_model=cal_cfg.reference_model, data_model=model,
                        rho_fwhm=config.glm.rho_fwhm or None, **null_kw)  # reuses the main model's masked data
    out = CalibrationResults(contrast=name, main=main, reference=ref)
    w.draw(draw.calibration_specs(out, w.entities))
    return out


def _control_network(config: Config, run) -> tuple[str | None, str]:
    """The positive-control network (a Seitzman (2020) network or None) and why, for the prose."""
    choice = config.dmn.control_network
    if choice == "none":
        return None, "no positive-control network was set in the configuration (dmn.control_network = \"none\")"
    if choice != "auto":
        return choice, "set in the configuration (dmn.control_network)"
    if run.dataset in ("spm_auditory", "simulated"):
        return "Auditory", "the default for the auditory listening task of this dataset"
    return None, ("the report does not know which network this task should engage, so no positive control was "
                  "assumed; set dmn.control_network to a network the contrast should activate (for example "
                  "\"Visual\" for a visual task)")


def _dmn(config: Config, run, bold, design, maps, contrast: ContrastResult, mask_img, w, bg_img, model=None,
         thresholded: dict | None = None, atlases=None) -> DMNAnalysis:
    """The Default Mode Network analysis of the main contrast, its images and figures.

    Every count of the DMN chapter is taken from the results chapter's thresholded maps (``thresholded``:
    ``{key: (image, ThresholdResult)}``): the primary threshold for the prose and figure, all of them for the
    overlap table. No other threshold is used without being named.
    """
    from .dmn import analyse_dmn, overlaps_by_threshold

    primary_img, thr = thresholded[contrast.primary_key]
    control, control_choice = _control_network(config, run)
    _step(f"Default Mode Network analysis ({config.glm.noise_model} noise model)")
    result, images = analyse_dmn(
        bold, design, maps.z_img, thr.z_threshold, mask_img, contrast=maps.expression,
        noise_model=config.glm.noise_model, alpha=config.inference.alpha,
        data_dir=data.nilearn_data_dir(config), space=run.space, t_r=config.glm.t_r,
        node_radius=config.dmn.node_radius, seed_radius=config.dmn.seed_radius,
        compute_seed=config.dmn.seed_map, model=model, thresholded_img=primary_img,
        seed_threshold_spec=thr.spec, control_network=control, control_choice=control_choice,
        atlases=atlases)  # the label atlases of the cluster tables: loaded once per run
    if not result.applicable:
        return DMNAnalysis(result=result, contrast_name=contrast.name, threshold=thr)
    overlaps = ()
    ents = w.entities
    if images.dmn_mask is not None:
        overlaps = tuple(overlaps_by_threshold(thresholded, images.dmn_mask, mask_img))
        w.image("dmn_mask", images.dmn_mask, ents, "mask", {"Description": f"the DMN: {result.network_source}"},
                desc="dmn")
    if images.schaefer_mask is not None:
        w.image("schaefer_mask", images.schaefer_mask, ents, "mask",
                {"Description": "the Default parcels of the Schaefer 2018 atlas"}, desc="schaefer")
    if images.seed_z is not None:
        seed = {"Description": f"seed-based map: a {config.dmn.seed_radius:g} mm sphere around the posterior "
                               "cingulate as an extra regressor", "Statistic": "z"}
        w.image("seed_z", images.seed_z, ents, "statmap", {**seed, "Thresholded": False}, stat="z",
                desc="pccseed")
        if images.seed_thresholded is not None:
            w.image("seed_thresholded", images.seed_thresholded, ents, "statmap",
                    {**seed, "Thresholded": True, "Threshold": result.seed.threshold_label}, stat="z",
                    desc="pccseedthresholded")
    out = DMNAnalysis(result=result, contrast_name=contrast.name, threshold=thr, overlaps=overlaps)
    w.draw(draw.dmn_specs(out, contrast, w.files, ents, bg=bg_img, alpha=config.inference.alpha))
    return out


def _check_t_r(run: data.Run, config: Config) -> float:
    zooms = run.bold_img.header.get_zooms()
    units = run.bold_img.header.get_xyzt_units()[1]
    t_r_header = float(zooms[3]) if len(zooms) > 3 else 0.0
    if units == "msec":
        t_r_header /= 1000.0
    source = next(iter(run.files.values()), "BOLD image")
    wanted = config.glm.t_r
    if wanted and not np.isclose(run.t_r, wanted, rtol=1e-3):
        raise data.DataError(f"{source}: the TR from {run.t_r_source or 'the dataset'} is {run.t_r:g} s but "
                             f"glm.t_r = {wanted:g} s in the config; set glm.t_r to the acquisition TR (or 0 to "
                             "take it from the data)")
    if t_r_header > 0 and not np.isclose(t_r_header, run.t_r, rtol=1e-3):
        if units not in ("sec", "msec"):  # converters often leave pixdim[4] = 1 with unknown time units
            log.warning("%s: the header's pixdim[4] = %g has no time unit; using TR = %g s from %s", source,
                        t_r_header, run.t_r, run.t_r_source or "the dataset")
            return 0.0
        raise data.DataError(f"{source}: the image header says TR = {t_r_header:g} s but the TR from "
                             f"{run.t_r_source or 'the config'} is {run.t_r:g} s; fix the header's pixdim[4] "
                             "or the sidecar")
    return t_r_header


def _fit(run: data.Run, matrix: data.BoldMatrix, design, config: Config):
    """The main GLM, fitted on the run's one matrix (:func:`analysis.noise.fit_matrix`).

    The matrix holds the masked run; nilearn's ``signal_scaling=0`` is applied to it. Settings that need the 4D
    image itself (spatial smoothing, other scalings, standardisation) go through nilearn's ``FirstLevelModel`` on
    the image, as before.
    """
    from . import glm
    from .noise import fit_matrix

    g = config.glm
    if g.smoothing_fwhm or g.standardize or g.signal_scaling != 0:
        import nibabel as nib

        bold = run.bold_img
        if matrix.mask_report.n_nonfinite:  # the GLM must not see NaN; those voxels are outside the mask anyway
            arr = np.asarray(bold.dataobj, dtype=np.float32)
            bold = nib.Nifti1Image(np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0), bold.affine, bold.header)
        return glm.fit(bold, design, config.glm, mask_img=matrix.mask_img)
    return fit_matrix(matrix.scale_in_place(), design, matrix.mask_img, g.noise_model, rho_fwhm=g.rho_fwhm or None)


def _finite(arr: np.ndarray, reduce) -> float:
    """``reduce`` (min or max) over the finite values of ``arr`` (NaN and inf voxels are excluded, and counted)."""
    finite = arr[np.isfinite(arr)]
    return float(reduce(finite)) if finite.size else 0.0


def _versions() -> dict[str, str]:
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
