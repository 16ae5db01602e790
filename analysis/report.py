"""Report-level helpers for the chapters: prose blocks, callouts and Quarto variables.

Everything here reads a :class:`~analysis.results.Results` and returns strings; nothing is computed.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import text
from .results import ContrastResult, Results

__all__ = ["methods", "results_text", "calibration", "calibration_text", "dmn", "dmn_text", "dmn_callout",
           "fallback_callout", "label_caption", "subtitle", "dataset_line", "statmap_text",
           "dmn_overlap_text", "preprocessing_text", "DMNFacts", "dmn_facts", "dmn_table", "dmn_missing", "preprocessing_section", "HRF_TEXT", "rft", "keywords_line"]

HRF_TEXT = {
    "spm": "canonical SPM haemodynamic response function",
    "spm + derivative": "canonical SPM haemodynamic response function and its temporal derivative",
    "spm + derivative + dispersion": "canonical SPM haemodynamic response function with temporal and "
                                     "dispersion derivatives",
    "glover": "Glover haemodynamic response function",
    "glover + derivative": "Glover haemodynamic response function and its temporal derivative",
    "glover + derivative + dispersion": "Glover haemodynamic response function with temporal and dispersion "
                                        "derivatives",
}

def _noise_text(res: Results) -> str:
    from .noise import NOISE_MODELS

    m = NOISE_MODELS[res.model.noise_model]
    extra = ""
    if m.name == "ar1_bc" and res.config.glm.rho_fwhm:
        extra = (f", the autocorrelation being smoothed with a {res.config.glm.rho_fwhm:g} mm FWHM Gaussian kernel "
                 "before the correction")
    return text.md(f"the temporal noise was modelled with {m.cited_description}{extra}")  # holds @citations


def calibration(res: Results):
    """``(main, reference)`` Calibration objects (reference may be None); ``(None, None)`` if not computed."""
    if res.calibration is None:
        return None, None
    return res.calibration.main, res.calibration.reference


def calibration_text(res: Results) -> str:
    main, ref = calibration(res)
    if main is None:
        return "The calibration check was switched off (`calibration.enabled = false`)."
    return text.render("calibration.md.j2", cal=main, reference=ref)


def space_text(space: str) -> str:
    """One or two sentences naming the data's MNI template and the atlases' space, and what the difference means."""
    from .space import ATLAS_SPACE, DETECTED_SPACE, TEMPLATE_SPACE

    if not space.upper().startswith("MNI"):
        return ""
    if space == TEMPLATE_SPACE:
        where = (f"nilearn's bundled ICBM 2009a nonlinear symmetric MNI152 template ({TEMPLATE_SPACE}) "
                 "[@fonov2011]")
    elif space == DETECTED_SPACE:
        where = ("an MNI152 template, as detected from the images (which one they were normalised to is not "
                 "recorded)")
    else:
        where = f"{text.md_escape(space)}, as declared"
    same = space == ATLAS_SPACE
    return text.md(
        f"Coordinates are in the space of {where}. The Harvard-Oxford, Yeo 2011 and Schaefer 2018 atlases used for labels and "
        f"network masks are distributed in FSL's MNI152 space ({ATLAS_SPACE})"
        + (", the same space." if same else
           ": both are MNI spaces, but the templates differ locally by a few millimetres, so a label near a "
           "region border, and the edge of a network mask, is uncertain by about a voxel."))


_NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


def rft(res: Results):
    """The random-field inference (:class:`analysis.rft.RFTInference`), or None when it was not available."""
    return res.rft


def _rft_context(res: Results) -> dict:
    return {"rft": res.rft, "rft_reason": res.rft_reason or "the analysis did not compute it",
            "statmap": res.dataset.dataset == "statmap"}


def methods(res: Results) -> str:
    """The methods paragraph (Markdown with @citations)."""
    c = res.contrast()
    return text.render("methods.md.j2", res=res, hrf=HRF_TEXT[res.model.hrf_model],
                       pre=res.preprocessing,
                       noise={"text": _noise_text(res)}, space_text=space_text(res.dataset.space),
                       threshold_labels=[t.label for t in c.thresholds], primary_label=c.primary.label,
                       n_ways=_NUMBER_WORDS.get(len(c.thresholds), str(len(c.thresholds))), **_rft_context(res))


def _peaks(c: ContrastResult, sign: str, n: int, labelled: bool) -> list[dict]:
    """The ``n`` largest clusters of one sign (most voxels first; ties: the higher peak), as the prose lists them."""
    main = c.peaks(sign)
    if main.empty:
        return []
    size = main["Cluster Size (voxels)"].astype(float)
    order = sorted(range(len(main)), key=lambda i: (-size.iloc[i], -abs(float(main["Peak Stat"].iloc[i]))))
    out = []
    for _, row in main.iloc[order[:n]].iterrows():
        label, nearest = "", False
        if labelled and isinstance(row.get("Label"), str) and row["Label"]:
            label = text.fmt_label(row["Label"], row.get("Label distance (mm)"))
            nearest = label != row["Label"]
        p_fwe = row.get("Cluster p(FWE)")
        out.append({"id": str(row["Cluster ID"]), "xyz": (row["X"], row["Y"], row["Z"]), "z": row["Peak Stat"],
                    "k": row["Cluster Size (voxels)"], "label": label, "nearest": nearest,
                    "p_fwe": None if p_fwe is None or p_fwe != p_fwe else float(p_fwe)})
    return out


def results_text(res: Results, name: str | None = None, n_peaks: int = 3) -> str:
    """The results paragraph for one contrast (the first by default)."""
    c = res.contrast(name)
    mni = res.dataset.space.startswith("MNI")
    note = "" if mni else ("Coordinates are in the scanner space of the raw images, not MNI space, so no atlas "
                           "labels are given.")
    keys = [t.key for t in c.thresholds]
    fwe = c.threshold("cluster_fwe") if "cluster_fwe" in keys and c.primary_key != "cluster_fwe" else None
    return text.render("results.md.j2", c=c, res=res, pos=_peaks(c, "+", n_peaks, mni),
                       neg=_peaks(c, "-", n_peaks, mni), space_note=note, cluster_fwe=fwe)


def dmn(res: Results):
    """``(DMNResult, DMNAnalysis)`` from the results, or ``(None, None)`` when the DMN analysis was off."""
    if res.dmn is None:
        return None, None
    return res.dmn.result, res.dmn


@dataclass(frozen=True)
class DMNFacts:
    """The DMN chapter's captions, as formatted strings (the chapter prints them; it never computes or rounds)."""

    contrast: str
    noise_model: str
    control_name: str  # the positive-control network, or "positive-control" when none
    alpha: str  # the FDR level, "0.05"
    node_radius: str  # mm, "6"
    seed_radius: str  # mm, "8"
    seed_xyz: str  # the PCC seed, "(0, −53, 26)"
    threshold_label: str  # the primary threshold the DMN counts use
    threshold_text: str  # its z cut-off, "|z| > 3.41"
    seed_threshold_label: str  # the threshold of the seed map
    seed_threshold_text: str
    negative_direction: str
    has_overlaps: bool
    has_seed: bool
    has_atlas_table: bool


def dmn_facts(res: Results) -> DMNFacts:
    """What the DMN chapter's captions need, from the results (empty strings where the step did not run)."""
    from .dmn import PCC_SEED

    d, info = dmn(res)
    c = res.contrast(info.contrast_name if info else None)
    seed = d.seed if d is not None else None
    return DMNFacts(
        contrast=c.name, noise_model=res.model.noise_model if res.model else "",
        control_name=(d.control_name if d is not None and d.control_name else "positive-control"),
        alpha=f"{res.config.inference.alpha:g}", node_radius=f"{res.config.dmn.node_radius:g}",
        seed_radius=f"{res.config.dmn.seed_radius:g}", seed_xyz=text.fmt_mni(seed.seed if seed else PCC_SEED),
        threshold_label=info.threshold_label if info else "", threshold_text=info.threshold_text if info else "",
        seed_threshold_label=seed.threshold_label if seed else "", seed_threshold_text=seed.threshold_text if seed else "",
        negative_direction=c.negative_direction, has_overlaps=bool(info and info.overlaps),
        has_seed=seed is not None, has_atlas_table=d is not None and d.atlas_table is not None)


def dmn_table(res: Results, which: str):
    """A table of the DMN chapters, or None when it was not computed.

    ``which``: ``"networks"`` (network-level tests), ``"nodes"`` (FDR-significant nodes), ``"atlases"`` (the
    atlases considered) or ``"overlap"`` (overlap at every threshold; also for a report from a statistical map).
    """
    from . import tables

    d = res.dmn.result if res.dmn is not None else None
    if which == "overlap":
        if res.dmn is not None and res.dmn.overlaps:
            return tables.dmn_overlaps(res.dmn.overlaps, res.contrast(res.dmn.contrast_name))
        if res.dmn_overlap is not None and res.dmn_overlap.overlaps:
            return tables.dmn_overlaps(res.dmn_overlap.overlaps, res.contrast())
        return None
    if d is None or not d.applicable:
        return None
    if which == "networks":
        return tables.dmn_networks(d)
    if which == "nodes":
        return tables.dmn_nodes(d, only_significant=True)
    if which == "atlases":
        return tables.atlas_comparison(d) if d.atlas_table is not None else None
    raise ValueError(f"no DMN table {which!r}")


def dmn_missing(res: Results) -> str:
    """``Not computed: <why>`` for a DMN table of a run without the DMN analysis."""
    return "Not computed: " + (dmn_reason(res) or "no DMN atlas could be loaded")


def dmn_reason(res: Results) -> str:
    d, _ = dmn(res)
    if d is None:
        return "the DMN analysis is switched off (`dmn.enabled = false`)"
    return d.reason or ""


def dmn_text(res: Results) -> str:
    d, info = dmn(res)
    if d is None:
        return "The Default Mode Network analysis was switched off in the configuration (`dmn.enabled = false`)."
    return text.render("dmn.md.j2", dmn=d, info=info, c=res.contrast(info.contrast_name))


def dmn_callout(res: Results) -> str:
    """A callout listing atlases that could not be loaded (empty when all loaded)."""
    d, _ = dmn(res)
    missing = dict(res.atlas.unavailable)
    if d is not None:
        missing.update(d.unavailable)
    if not missing:
        return ""
    items = "\n".join(f"- **{text.md_escape(name)}**: {text.md_escape(reason)}" for name, reason in sorted(missing.items()))
    return ("::: {.callout-note}\n## Atlases not available in this run\n\n"
            "These atlases could not be fetched; their columns and rows are marked unavailable:\n\n"
            f"{items}\n:::\n")


def label_caption(res: Results) -> str:
    """The sentence naming the label atlas (or why there are no labels) for cluster-table captions."""
    if not res.dataset.space.startswith("MNI"):
        return ("Coordinates are in native scanner space; MNI atlas labels would be wrong there and are not "
                "given.")
    return res.atlas.caption or "No anatomical labels."


def dataset_line(res: Results) -> str:
    """One line naming what was analysed, for the preface."""
    ds = res.dataset
    if not ds.has_time_series:
        sm = res.statmap
        stat = f"t map, {sm.dof or 0:g} degrees of freedom" if sm.stat == "t" else "z map"
        return f"{sm.source or ds.description} ({stat}, {ds.space})"  # inline: Quarto shows it as text
    sim = " (simulated)" if ds.is_simulated and ds.dataset != "simulated" else ""
    return f"{ds.dataset}{sim}, {ds.n_scans} volumes, TR {text.fmt_num(ds.t_r, 2).rstrip('0').rstrip('.')} s, {ds.space}"


def keywords_line(meta=None) -> str:
    """The preface's keywords line as Markdown (each keyword escaped), or "" when the report has none.

    ``meta`` is a :class:`analysis.metadata.ReportMetadata` (default: the ``[report]`` table of the config).
    Printed by an ``output: asis`` cell, so a report without keywords shows no empty "Keywords:" line.
    """
    if meta is None:
        from . import metadata

        meta = metadata.from_toml()
    if not meta.keywords:
        return ""
    return "**Keywords:** " + ", ".join(text.md_escape(k) for k in meta.keywords) + ".\n"


def statmap_text(res: Results) -> str:
    n = len(res.contrast().thresholds)
    return text.render("statmap.md.j2", res=res, sm=res.statmap, c=res.contrast(),
                       threshold_labels=[t.label for t in res.contrast().thresholds],
                       space_text=space_text(res.dataset.space), n_ways=_NUMBER_WORDS.get(n, str(n)),
                       **_rft_context(res))


def dmn_overlap_text(res: Results) -> str:
    ov = res.dmn_overlap
    if ov is None:
        return "The Default Mode Network comparison was switched off in the configuration (`dmn.enabled = false`)."
    return text.render("dmn_overlap.md.j2", ov=ov, c=res.contrast())


def preprocessing_text(res: Results) -> str:
    """Preprocessing methods and motion QC paragraph (or why preprocessing did not run)."""
    pre = res.preprocessing
    if pre is None or not pre.ran:
        return f"No preprocessing was run: {text.md_escape(pre.reason if pre else 'not recorded')}."
    return text.render("preprocessing.md.j2", **vars(pre.context))


QC_FIGURES = (  # role, label, caption
    ("qc.motion", "fig-qc-motion", "Head motion: translations (mm), rotations (degrees) and framewise displacement "
                                   "(mm) per volume; the dashed line marks the high-motion threshold."),
    ("qc.coregistration", "fig-qc-coregistration", "Coregistration: edges of the anatomical image over the mean "
                                                   "functional image moved into anatomical space."),
    ("qc.normalisation", "fig-qc-normalisation", "Normalisation: contours of the MNI152 template over the "
                                                 "normalised mean functional image."),
    ("qc.carpet", "fig-qc-carpet", "Carpet plot of the realigned run (voxels by time) with framewise "
                                   "displacement above."),
)


def preprocessing_section(res: Results, chapter_dir: str = "chapters") -> str:
    """The QC chapter body as Markdown: prose, motion summary table and the four QC figures (if run)."""
    import os

    from . import tables

    out = [preprocessing_text(res)]
    pre = res.preprocessing
    if pre is None or not pre.ran:
        return out[0]
    refs = ", ".join(f"@{label}" for _, label, _ in QC_FIGURES)
    out.append(f"@tbl-qc-motion summarises head motion; {refs} show the checks that FEAT and fMRIPrep reports show.")
    out.append("::: {#tbl-qc-motion}\n" + tables.markdown(tables.motion_summary(pre)) + "\n\n"
               "Head motion summary (framewise displacement after @power2012).\n:::")
    for role, label, caption in QC_FIGURES:
        if role in res.figures:
            path = os.path.relpath(res.figure(role), start=chapter_dir)
            out.append(f"::: {{#{label}}}\n![]({path})\n\n{caption}\n:::")
    return "\n\n".join(out)


def subtitle(res: Results) -> str:
    """Book subtitle naming the data the report is built on."""
    ds = res.dataset
    if ds.fallback_reason:
        return "Built on simulated data: the SPM auditory dataset could not be fetched"
    if ds.is_simulated:
        return "Built on simulated data (ground truth known), not a real scan"
    if not ds.has_time_series:
        return f"From the statistical map {next(iter(ds.files))}"
    return f"Dataset: {ds.dataset}"
def fallback_callout(res: Results) -> str:
    """A Quarto callout saying plainly that the report is built on simulated data (empty otherwise)."""
    ds = res.dataset
    if not ds.is_simulated:
        return ""
    why = (f"The requested SPM auditory dataset was not used: {text.md_escape(ds.fallback_reason)}." if ds.fallback_reason
           else "The configuration selects the simulated dataset (`data.dataset = \"simulated\"`).")
    return ("::: {.callout-warning}\n## Simulated data\n\n"
            f"Every number, map and table in this report comes from **simulated data**, not from a real scan. {why} "
            "The simulation has the timing of the SPM auditory run and a planted auditory response, so the "
            "report can be checked against the known truth. To analyse the real data, make it available to "
            "nilearn (`NILEARN_DATA` or `data.data_dir`) and re-run; set `data.fallback_to_simulated = false` "
            "to make a missing dataset an error instead.\n:::\n")

