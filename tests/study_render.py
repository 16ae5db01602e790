"""A small simulated study computed and rendered for real (``quarto render --profile study``), for the study render
and browser tests (the ``rendered_study`` fixture of conftest.py) and bench/bench_study_render.py.

The project's sources are copied into a temporary folder (as tests/rendered.py does for the single-run book), the
study is simulated outside it and computed into ``<copy>/study/`` (``output.dir = "."``), then Quarto renders the
study profile there. Five subjects of two runs: sub-02's second run has broken events (left out with its reason),
sub-05's two runs too (the subject is left out), so the report shows both kinds of exclusion; the planted response
is strong and alike across subjects (high tSNR), so that the four subjects of the group (3 degrees of freedom: with
2, FDR cannot pass anything over 70,000 voxels) give group clusters. Calibration runs with two null designs, so
each run has a verdict.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from rendered import copy_sources, html_pages, quarto_command, quarto_render

STUDY_SOURCES = ["_quarto-study.yml", "index.study.qmd"]
MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
BROKEN_EVENTS = "onset\tduration\ttrial_type\n0\t42\tn/a\n"


@dataclass(frozen=True)
class RenderedStudy:
    profile: str
    project: Path
    log: str
    seconds: float  # the quarto render
    study_seconds: float  # the study computation
    config: Path

    @property
    def book(self) -> Path:
        return self.project / "_book-study"

    @property
    def study_dir(self) -> Path:
        return self.project / "study"

    def html_pages(self) -> list[Path]:
        return html_pages(self.book)

    def results(self) -> dict:
        import json

        return json.loads((self.study_dir / "results" / "study.json").read_text(encoding="utf-8"))


def copy_study_sources(dest: Path) -> Path:
    from rendered import PROJECT

    project = copy_sources(dest)
    for name in STUDY_SOURCES:
        shutil.copy2(PROJECT / name, project / name)
    shutil.rmtree(project / "chapters" / "study" / "subjects", ignore_errors=True)  # generated in the work tree
    return project


def write_config(project: Path, bids: Path, n_perm: int = 100) -> Path:
    path = project / "study-test.toml"
    path.write_text(f"""
[data]
dataset = "bids"

[bids]
root = "{bids}"
task = "listening"
space = "MNI152NLin2009aSym"
confounds = {MOTION!r}

[calibration]
enabled = true
n_null = 2
reference_model = ""

[dmn]
enabled = false

[output]
dir = "."

[study]
dir = "study"
n_perm = {n_perm}
tfce = false
n_workers = 2
""".replace("'", '"'), encoding="utf-8")
    return path


def simulate(root: Path, n_subjects: int = 5, n_runs: int = 2, broken: bool = True) -> Path:
    from analysis.study import simulate_study

    root = simulate_study(root, n_subjects=n_subjects, n_runs=n_runs, seed=5, tsnr_gm=250.0, auditory_psc=3.0,
                          auditory_sd=0.05, n_jobs=2)
    if broken:
        func = root / "sub-02" / "func"
        (func / "sub-02_task-listening_run-2_events.tsv").write_text(BROKEN_EVENTS)
        for r in (1, 2):
            (root / f"sub-{n_subjects:02d}" / "func" / f"sub-{n_subjects:02d}_task-listening_run-{r}_events.tsv"
             ).write_text(BROKEN_EVENTS)
    return root


def compute(project: Path, config: Path, bids: Path) -> float:
    """The study, with the planted DMN as the group network (the runs' own DMN analysis is off: faster)."""
    import nibabel as nib

    from analysis.config import load_config
    from analysis.study import run_study

    start = time.perf_counter()
    cwd = os.getcwd()
    os.chdir(project)  # output.dir = "." is the project copy
    try:
        run_study(load_config(config), n_workers=2, progress=lambda line: None,
                  network_img=nib.load(bids / "derivatives" / "truth" / "dmn_mask.nii.gz"))
    finally:
        os.chdir(cwd)
    return time.perf_counter() - start


def render_study(tmp: Path) -> RenderedStudy:
    """Simulate, compute and render (html, typst, docx) the small study under ``tmp``."""
    quarto_command()  # skip before computing anything when Quarto is missing
    project = copy_study_sources(tmp / "project")
    bids = simulate(tmp / "bids")
    config = write_config(project, bids)
    study_seconds = compute(project, config, bids)
    log, seconds = quarto_render(project, config, "--profile", "study")
    return RenderedStudy("study", project, log, seconds, study_seconds, config)
