"""Report-level helpers for the chapters: prose blocks, callouts and Quarto variables.

Everything here reads a :class:`~analysis.results.Results` and returns strings; nothing is computed.
"""

from __future__ import annotations

from pathlib import Path

from . import text
from .results import ContrastResult, Results

__all__ = ["methods", "results_text", "fallback_callout", "write_quarto_variables", "title", "NOISE_TEXT",
           "HRF_TEXT"]

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

NOISE_TEXT = {
    "ols": "the noise was modelled as white (ordinary least squares), with no correction for serial correlation",
    "ar1": "serial correlations were modelled with nilearn's voxel-wise AR(1) model (autocorrelation estimated "
           "from the ordinary least squares residuals, binned, and the model refitted by prewhitening) "
           "[@abraham2014]",
}


def _noise_text(noise_model: str) -> str:
    try:
        from .noise import NOISE_MODELS
    except ImportError:
        NOISE_MODELS = {}
    if noise_model in NOISE_TEXT:
        return NOISE_TEXT[noise_model]
    entry = NOISE_MODELS.get(noise_model)
    return getattr(entry, "methods_text", None) or (entry.get("methods_text") if isinstance(entry, dict) else None) \
        or f"serial correlations were modelled with the {noise_model} noise model"


def methods(res: Results) -> str:
    """The methods paragraph (Markdown with @citations)."""
    c = res.contrast()
    return text.render("methods.md.j2", res=res, hrf=HRF_TEXT[res.model.hrf_model],
                       noise={"text": _noise_text(res.model.noise_model)},
                       threshold_labels=[t.label for t in c.thresholds], primary_label=c.primary.label)


def _peaks(c: ContrastResult, sign: str, n: int, labelled: bool) -> list[dict]:
    out = []
    for _, row in c.peaks(sign).head(n).iterrows():
        label = ""
        if labelled:
            for col in ("Label: Harvard-Oxford", "Label"):
                if col in row and isinstance(row[col], str) and row[col]:
                    label = row[col]
                    break
        out.append({"xyz": (row["X"], row["Y"], row["Z"]), "z": row["Peak Stat"],
                    "k": row["Cluster Size (voxels)"], "label": label})
    return out


def results_text(res: Results, name: str | None = None, n_peaks: int = 3) -> str:
    """The results paragraph for one contrast (the first by default)."""
    c = res.contrast(name)
    mni = res.dataset.space.startswith("MNI")
    note = "" if mni else ("Coordinates are in the scanner space of the raw images, not MNI space, so no atlas "
                           "labels are given.")
    return text.render("results.md.j2", c=c, res=res, pos=_peaks(c, "+", n_peaks, mni),
                       neg=_peaks(c, "-", n_peaks, mni), space_note=note)


def title(res: Results) -> str:
    base = "Listening vs rest: first-level fMRI report"
    return base + (" \u2014 SIMULATED DATA" if res.dataset.is_simulated else "")


def fallback_callout(res: Results) -> str:
    """A Quarto callout saying plainly that the report is built on simulated data (empty otherwise)."""
    ds = res.dataset
    if not ds.is_simulated:
        return ""
    why = (f"The requested SPM auditory dataset was not used: {ds.fallback_reason}." if ds.fallback_reason
           else "The configuration selects the simulated dataset (`data.dataset = \"simulated\"`).")
    return ("::: {.callout-warning}\n## Simulated data\n\n"
            f"Every number, map and table in this report comes from **simulated data**, not from a real scan. {why} "
            "The simulation has the timing of the SPM auditory run and a planted auditory response, so the "
            "report can be checked against the known truth. To analyse the real data, make it available to "
            "nilearn (`NILEARN_DATA` or `data.data_dir`) and re-run; set `data.fallback_to_simulated = false` "
            "to make a missing dataset an error instead.\n:::\n")


def write_quarto_variables(res: Results, path: Path) -> Path:
    """Write ``_variables.yml`` for ``{{< var ... >}}`` shortcodes (title and dataset)."""
    import json

    lines = [f"report-title: {json.dumps(title(res))}",
             f"dataset: {json.dumps(res.dataset.dataset + (' (simulated)' if res.dataset.is_simulated else ''))}",
             f"subtitle: {json.dumps('Simulated data: not a real scan' if res.dataset.is_simulated else 'SPM auditory dataset')}"]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
