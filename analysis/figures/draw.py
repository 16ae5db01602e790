"""Every figure of the report as a function of the saved results and derivatives.

As FitLins' ``_visualize(data, out_name)``: each figure is drawn from files of the output folder (a derivative
map, a table) and values of the :class:`~analysis.results.Results` tree, and named after the derivative it
shows. :func:`figure_specs` lists them for a results tree; the run submits the same specs part by part as the
parts are computed (:func:`data_specs`, :func:`contrast_specs`, ...), and ``fmri-report redraw`` draws
:func:`figure_specs` of the saved results, so a redraw gives the run's files byte for byte, without fitting.

This module is imported by the analysis process: it names the plotting functions as strings and never imports
matplotlib or ``nilearn.plotting``; :func:`draw_spec` resolves them where the figure is drawn.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..derivatives import RunEntities, bids_name
from . import MNI_BACKGROUND

if TYPE_CHECKING:
    from ..results import CalibrationResults, ContrastResult, DMNAnalysis, DMNOverlapSummary, Preprocessing, Results

__all__ = ["Image", "TableFile", "FigureSpec", "draw_spec", "figure_specs", "data_specs", "design_specs",
           "contrast_specs", "dmn_specs", "dmn_overlap_specs", "calibration_specs", "qc_specs", "background_for",
           "display_cut", "figure_path", "FIGURES"]

FIGURES = "figures"


@dataclass(frozen=True)
class Image:
    """A NIfTI file of the output folder (relative path), loaded where the figure is drawn."""

    path: str


@dataclass(frozen=True)
class TableFile:
    """A TSV file of the output folder (relative path); one ``column`` of it as an array, or the whole table."""

    path: str
    column: str | None = None
    index_col: int | None = None


@dataclass(frozen=True)
class FigureSpec:
    """One figure: its role in the report, its file, the plotting function and its arguments."""

    role: str
    path: str  # relative to the output folder, figures/<name>
    func: str  # "<module>.<function>" of analysis.figures
    kwargs: dict[str, Any] = field(default_factory=dict)  # Image / TableFile values are read from the folder


def figure_path(entities: RunEntities | Mapping[str, str], suffix: str, extension: str = ".png", **more: str) -> str:
    return f"{FIGURES}/{bids_name(entities, suffix, extension, **more)}"


def _materialize(value, root: Path):
    import nibabel as nib

    if isinstance(value, Image):
        return nib.load(root / value.path)
    if isinstance(value, TableFile):
        import pandas as pd

        table = pd.read_csv(root / value.path, sep="\t", index_col=value.index_col)
        return table[value.column].to_numpy(dtype=float) if value.column else table
    if isinstance(value, dict):
        return {k: _materialize(v, root) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_materialize(v, root) for v in value)
    return value


def draw_spec(spec: FigureSpec, root: str | Path) -> Path:
    """Draw one figure into ``root / spec.path`` from the files under ``root`` (runs in a drawing process)."""
    import importlib

    root = Path(root)
    module, name = spec.func.rsplit(".", 1)
    func = getattr(importlib.import_module(f"analysis.figures.{module}"), name)
    out = root / spec.path
    out.parent.mkdir(parents=True, exist_ok=True)
    return func(**_materialize(spec.kwargs, root), out_file=out)


# ----------------------------------------------------------------------------- what each part draws

def display_cut(threshold) -> float:
    """Colour threshold for drawing an already thresholded map: just below its cut-off (every survivor shows)."""
    return float(math.nextafter(threshold.z_threshold, 0)) if threshold.has_cutoff else 1.0


def background_for(space: str, files: Mapping[str, str]):
    """What the map figures are drawn on: the MNI152 template in MNI space, else the run's mean image."""
    if space.upper().startswith("MNI") or "mean" not in files:
        return MNI_BACKGROUND
    return Image(files["mean"])


def data_specs(files: Mapping[str, str], entities: RunEntities) -> list[FigureSpec]:
    """The first volumes, the mean image and the anatomical image of the run as acquired."""
    out = [FigureSpec("volumes", figure_path(entities, "bold", desc="firstvolumes"), "maps.plot_volumes",
                      {"bold_img": Image(files["firstvolumes"])}),
           FigureSpec("mean", figure_path(entities, "bold", desc="mean"), "maps.plot_image",
                      {"img": Image(files["mean"])})]
    if "anat" in files:
        out.append(FigureSpec("anat", figure_path(entities, "T1w", desc="anat"), "maps.plot_image",
                              {"img": Image(files["anat"])}))
    return out


def design_specs(contrast_matrix, design_path: str, entities: RunEntities) -> list[FigureSpec]:
    design = TableFile(design_path, index_col=0)
    return [FigureSpec("design", figure_path(entities, "design", desc="matrix"), "maps.plot_design",
                       {"design": design}),
            FigureSpec("contrasts", figure_path(entities, "design", desc="contrasts"), "maps.plot_contrasts",
                       {"contrast_matrix": contrast_matrix, "design": design})]


def contrast_specs(c: ContrastResult, entities: RunEntities, *, bg, effect_label: str,
                   viewer: bool) -> list[FigureSpec]:
    """Threshold panel, glass brain, z map, effect map (and the interactive viewer) of one contrast."""
    name, ent = c.name, c.entity
    primary = c.primary
    peaks = c.peaks()
    cut = tuple(float(v) for v in peaks.iloc[0][["X", "Y", "Z"]]) if len(peaks) else None  # through the top peak
    out = [FigureSpec(f"{name}.thresholds", figure_path(entities, "statmap", contrast=ent, stat="z",
                                                        desc="thresholds"), "maps.plot_threshold_panel",
                      {"thresholded": {t.key: Image(c.files[f"thresholded.{t.key}"]) for t in c.thresholds},
                       "labels": {t.key: t.label for t in c.thresholds},
                       "counts": {t.key: f"{t.n_pos} + / {t.n_neg} \u2212 voxels" for t in c.thresholds}}),
           FigureSpec(f"{name}.glass", figure_path(entities, "statmap", contrast=ent, stat="z", desc="glass"),
                      "maps.plot_glass", {"thresholded_img": Image(c.files["z_thresholded"])})]
    if viewer:
        out.append(FigureSpec(f"{name}.viewer", figure_path(entities, "statmap", ".html", contrast=ent, stat="z",
                                                            desc="viewer"), "maps.plot_viewer",
                              {"img": Image(c.files["z"]), "mni": entities.space.upper().startswith("MNI"),
                               "threshold": primary.z_threshold if primary.survived else None,
                               "title": f"{name}: z"}))
    out.append(FigureSpec(f"{name}.z", figure_path(entities, "statmap", contrast=ent, stat="z"), "maps.plot_map",
                          {"img": Image(c.files["z"]), "bg_img": bg, "cut_coords": cut, "colorbar_label": "z"}))
    if "effect" in c.files:
        out.append(FigureSpec(f"{name}.effect", figure_path(entities, "statmap", contrast=ent, stat="effect"),
                              "maps.plot_map", {"img": Image(c.files["effect"]), "bg_img": bg, "cut_coords": cut,
                                                "colorbar_label": effect_label}))
    return out


def dmn_specs(dmn: DMNAnalysis, c: ContrastResult, files: Mapping[str, str], entities: RunEntities, *, bg,
              alpha: float) -> list[FigureSpec]:
    """The DMN chapter's figures: network map, z map with the DMN outlined, nodes, node effects, seed map."""
    d = dmn.result
    if not d.applicable:
        return []
    out = []
    if "dmn_mask" in files:
        out.append(FigureSpec("dmn.map", figure_path(entities, "mask", desc="dmn"), "dmn.plot_dmn_map",
                              {"dmn_mask_img": Image(files["dmn_mask"]),
                               "schaefer_mask_img": Image(files["schaefer_mask"]) if "schaefer_mask" in files
                               else None}))
        out.append(FigureSpec("dmn.contours", figure_path(entities, "statmap", contrast=c.entity, stat="z",
                                                          desc="dmncontours"), "dmn.plot_z_with_dmn_contours",
                              {"z_img": Image(c.files["z_thresholded"]), "dmn_mask_img": Image(files["dmn_mask"]),
                               "threshold": display_cut(dmn.threshold), "bg_img": bg}))
    if d.nodes_table is not None and not d.nodes_table.empty:
        out.append(FigureSpec("dmn.nodes", figure_path(entities, "nodes", desc="dmn"), "dmn.plot_dmn_nodes",
                              {"nodes": d.nodes_table, "control": d.control_table}))
        out.append(FigureSpec("dmn.effects", figure_path(entities, "nodes", contrast=c.entity, desc="dmneffects"),
                              "dmn.plot_roi_effects",
                              {"nodes_table": d.nodes_table, "control_table": d.control_table, "network": d.network,
                               "control_network": d.control_network, "alpha": alpha,
                               "control_name": d.control_name or "control"}))
    if "seed_z" in files and d.seed is not None:
        seed_map = files.get("seed_thresholded", files["seed_z"])
        thr = d.seed.threshold
        out.append(FigureSpec("dmn.seed", figure_path(entities, "statmap", stat="z", desc="pccseed"),
                              "dmn.plot_seed_map",
                              {"seed_z_img": Image(seed_map),
                               "threshold": float(math.nextafter(thr, 0)) if math.isfinite(thr) else 1.0,
                               "dmn_mask_img": Image(files["dmn_mask"]) if "dmn_mask" in files else None,
                               "bg_img": bg}))
    return out


def dmn_overlap_specs(ov: DMNOverlapSummary, c: ContrastResult, files: Mapping[str, str], entities: RunEntities,
                      *, bg) -> list[FigureSpec]:
    """A report from a statistical map: the map with the DMN outlined."""
    if not ov.available or "dmn_mask" not in files:
        return []
    return [FigureSpec("dmn.contours", figure_path(entities, "statmap", contrast=c.entity, stat="z",
                                                   desc="dmncontours"), "dmn.plot_z_with_dmn_contours",
                       {"z_img": Image(c.files["z_thresholded"]), "dmn_mask_img": Image(files["dmn_mask"]),
                        "threshold": display_cut(ov.threshold), "bg_img": bg})]


def calibration_specs(cal: CalibrationResults, entities: RunEntities) -> list[FigureSpec]:
    out = [FigureSpec("calibration", figure_path(entities, "zdist", desc="calibration"),
                      "calibration.plot_calibration", {"cal": cal.main})]
    if cal.reference is not None:
        out.append(FigureSpec("calibration_reference", figure_path(entities, "zdist", desc="calibrationreference"),
                              "calibration.plot_calibration", {"cal": cal.reference}))
    return out


def qc_specs(pre: Preprocessing, files: Mapping[str, str], entities: RunEntities, *, t_r: float) -> list[FigureSpec]:
    """Motion, normalisation, coregistration and carpet figures of the preprocessing (when it ran)."""
    if not pre.ran or pre.context is None:
        return []
    native = entities.with_space("")
    motion = files["pre.motion"]
    fd = TableFile(motion, column="framewise_displacement")
    fd_threshold = pre.context.fd_threshold
    return [
        FigureSpec("qc.motion", figure_path(native, "timeseries", desc="motion"), "qc.plot_motion",
                   {"motion": TableFile(motion), "fd": fd, "fd_threshold": fd_threshold, "t_r": t_r}),
        FigureSpec("qc.normalisation", figure_path(entities, "bold", desc="normalisation"), "qc.plot_registration",
                   {"background_img": Image(files["pre.mean"]), "overlay_img": Image(files["pre.template"]),
                    "overlay": "contours", "title": "MNI152 template contours over the normalised mean image"}),
        FigureSpec("qc.coregistration", figure_path(native, "bold", desc="coregistration"), "qc.plot_registration",
                   {"background_img": Image(files["pre.coregistered"]), "overlay_img": Image(files["pre.anat"]),
                    "overlay": "edges", "title": "Anatomical edges over the coregistered mean functional image"}),
        FigureSpec("qc.carpet", figure_path(native, "bold", desc="carpet"), "qc.plot_carpet",
                   {"bold_img": Image(files["pre.realigned"]), "t_r": t_r, "fd": fd, "fd_threshold": fd_threshold}),
    ]


def figure_specs(res: Results) -> list[FigureSpec]:
    """Every figure of the report, from the results tree (what the run drew, in the same order); none when the
    run was told not to draw (``output.figures = false``, a study's runs)."""
    from ..derivatives import RunEntities

    if not res.config.output.figures:
        return []

    ent = RunEntities(**res.entities)
    acquired = ent.with_space(res.dataset.acquired_space or res.dataset.space)
    space = ent.with_space(res.dataset.space)
    bg = background_for(res.dataset.space, res.files)
    out: list[FigureSpec] = []
    if res.preprocessing is not None and res.preprocessing.ran:
        out += qc_specs(res.preprocessing, res.files, space, t_r=res.dataset.t_r)
    if "firstvolumes" in res.files:
        out += data_specs(res.files, acquired)
    if res.model is not None:
        out += design_specs(res.model.contrast_matrix, res.files["design"], space)
    effect_label = ("% signal change" if res.config.glm.signal_scaling == 0 else "effect")
    for i, c in enumerate(res.contrasts.values()):
        out += contrast_specs(c, space, bg=bg, effect_label=effect_label, viewer=i == 0)
    first = next(iter(res.contrasts.values()))
    if res.dmn is not None:
        out += dmn_specs(res.dmn, res.contrast(res.dmn.contrast_name), res.files, space, bg=bg,
                         alpha=res.config.inference.alpha)
    if res.dmn_overlap is not None:
        out += dmn_overlap_specs(res.dmn_overlap, first, res.files, space, bg=bg)
    if res.calibration is not None:
        out += calibration_specs(res.calibration, space)
    return out
