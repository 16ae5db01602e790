"""The stages of one run's analysis, in the order :func:`analysis.pipeline.run` calls them.

Each stage takes the objects it works on (the run, its voxel-by-time matrix, the fitted model, the design) and
the configuration, computes, writes its derivative maps and tables through the :class:`Writer` and submits the
figures drawn from them (:mod:`analysis.figures.draw`), and returns a typed part of the results tree.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from . import data
from .config import Config, ConfigError
from .derivatives import RunEntities, bids_name, write_image
from .figures import draw
from .results import (AtlasInfo, CalibrationResults, ContrastResult, DMNAnalysis, DMNOverlapSummary, Preprocessing,
                      PreprocessingContext, Results)

__all__ = ["Writer", "data_derivatives", "preprocess", "fit_model", "rft_from_model", "rft_from_statmap",
           "label_atlases", "atlas_info", "infer_contrast", "dmn_analysis", "dmn_overlap", "calibrate",
           "control_network", "check_t_r", "existing_file", "finite_extreme"]

log = logging.getLogger("analysis")


def _step(message: str) -> None:
    log.info(message)


def data_derivatives(w: Writer, raw: data.Run, matrix: data.BoldMatrix | None = None) -> None:
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


def rft_from_model(config: Config, model, mask_img, dof: float):
    """Random-field inference from the fitted model's whitened residuals (smoothness, resels, FWE thresholds)."""
    from . import rft
    from .noise import model_residual_rows

    inf = config.inference  # the residuals are computed plane by plane as the estimate reads them (never held whole)
    smoothness = rft.estimate_smoothness(model_residual_rows(model), mask_img, dof=dof,
                                         method=inf.smoothness_method)
    return rft.RFTInference.compute(smoothness, alpha=inf.alpha, cdt_alpha=inf.cdt_alpha, dof=dof,
                                    two_sided=inf.two_sided)


def rft_from_statmap(config: Config, sm):
    """Random-field inference with the smoothness the user gave for the map (None when none was given)."""
    from . import rft

    cfg, inf = config.statmap, config.inference
    if cfg.fwhm:
        smoothness = rft.smoothness_from_fwhm(cfg.fwhm, sm.mask_img)
    elif cfg.rpv:
        smoothness = rft.smoothness_from_rpv(existing_file(cfg.rpv, "statmap.rpv"), sm.mask_img)
    elif cfg.smoothness_file:
        smoothness = rft.smoothness_from_fsl(existing_file(cfg.smoothness_file, "statmap.smoothness_file"), sm.mask_img)
    else:
        return None
    dof = float(sm.dof) if sm.stat == "t" and sm.dof else None
    return rft.RFTInference.compute(smoothness, alpha=inf.alpha, cdt_alpha=inf.cdt_alpha, dof=dof,
                                    two_sided=inf.two_sided)


def existing_file(path: str, key: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{p}: file not found; check {key} in the config")
    return p


def dmn_overlap(config: Config, mask_img, contrast: ContrastResult, w, bg_img, thresholded: dict) -> DMNOverlapSummary:
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


class Writer:
    """Writes a generation's derivative maps and tables into the staging folder, and submits its figures.

    Every name carries the run's BIDS entities (:mod:`analysis.derivatives`); every map gets a JSON sidecar.
    Figures are drawn from those files (:mod:`analysis.figures.draw`), in worker processes when there is a pool.
    """

    def __init__(self, stage: Path, pool, entities: RunEntities, *, figures: bool = True):
        self.stage = stage
        self.pool = pool
        self.entities = entities
        self.draws = figures  # False: no figure is drawn (``output.figures``; a study's runs)
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
        if not self.draws:
            return
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


def atlas_info(atlases, space: str) -> AtlasInfo:
    """Caption and unavailable atlases of the label atlases, for the report."""
    if atlases is None:
        return AtlasInfo(space=space)
    from .atlas import label_caption, unavailable_atlases

    return AtlasInfo(caption=label_caption(atlases, space), unavailable=unavailable_atlases(atlases), space=space)


def label_atlases(config: Config, space: str):
    if not space.startswith("MNI"):
        return None
    from .atlas import load_label_atlases

    return load_label_atlases(data.nilearn_data_dir(config))


def infer_contrast(w: Writer, config: Config, name: str, expression: str, direction: str, z_img, mask_img, *,
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


def preprocess(config: Config, run: data.Run, w: Writer) -> tuple[data.Run, Preprocessing]:
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


def calibrate(config: Config, bold, design, mask_img, model, w, run=None) -> CalibrationResults:
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


def control_network(config: Config, run) -> tuple[str | None, str]:
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


def dmn_analysis(config: Config, run, bold, design, maps, contrast: ContrastResult, mask_img, w, bg_img, model=None,
         thresholded: dict | None = None, atlases=None) -> DMNAnalysis:
    """The Default Mode Network analysis of the main contrast, its images and figures.

    Every count of the DMN chapter is taken from the results chapter's thresholded maps (``thresholded``:
    ``{key: (image, ThresholdResult)}``): the primary threshold for the prose and figure, all of them for the
    overlap table. No other threshold is used without being named.
    """
    from .dmn import analyse_dmn, overlaps_by_threshold

    primary_img, thr = thresholded[contrast.primary_key]
    control, control_choice = control_network(config, run)
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


def check_t_r(run: data.Run, config: Config) -> float:
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


def fit_model(run: data.Run, matrix: data.BoldMatrix, design, config: Config):
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


def finite_extreme(arr: np.ndarray, reduce) -> float:
    """``reduce`` (min or max) over the finite values of ``arr`` (NaN and inf voxels are excluded, and counted)."""
    finite = arr[np.isfinite(arr)]
    return float(reduce(finite)) if finite.size else 0.0
