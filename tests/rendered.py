"""Real ``quarto render`` of the book into a temporary copy of the project, shared by the render and browser tests.

The copy holds the project's sources only (no ``_book``, ``_freeze``, results or figures of the work tree), so a
render starts cold, as in CI, and never touches the repository's own outputs. The default profile renders the
simulated run (``data.dataset = "simulated"``, whatever the machine can fetch) to html, typst and docx; the
``statmap`` profile renders a z map that :func:`planted_z_map` makes (two auditory blobs on the MNI152 grid).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

PROJECT = Path(__file__).resolve().parents[1]
SOURCES = ["_quarto.yml", "_quarto-timeseries.yml", "_quarto-statmap.yml", "index.qmd", "references.qmd",
           "references.bib", "report.scss", "analysis.toml", "chapters", "analysis"]
RENDER_TIMEOUT = 600

# Render-log lines that are expected and harmless (each explained):
EXPECTED_LOG_WARNINGS = [
    # the shared Quarto build has no typst-gather helper (../shared/quarto/README.md)
    re.compile(r"WARN: typst-gather analyze failed; staging all packages as fallback"),
]

# An unresolved cross-reference as Quarto shows it: ``?@fig-x`` in text (PDF, Word), ``?fig-x`` in a
# ``quarto-unresolved-ref`` span in HTML (Quarto >= 1.4)
UNRESOLVED_REF = re.compile(r"\?@|\?(fig|tbl|sec|eq|lst|thm|lem)-[\w-]+|quarto-unresolved-ref")


def unresolved_references(html: str, visible: str) -> list[str]:
    """The unresolved cross-references of an HTML page (its source and its visible text)."""
    return [m.group(0) for text in (html, visible) for m in UNRESOLVED_REF.finditer(text)]


def quarto_command() -> str:
    """The ``quarto`` to render with: on PATH, else the shared install; skipped (failed in CI) when neither."""
    found = shutil.which("quarto") or (shutil.which("quarto", path="/opt/quarto/bin"))
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("quarto is not installed; .ci/run installs it from ../shared/quarto")
    pytest.skip("quarto is not installed (bash ../shared/quarto/install.sh ...; see ../shared/quarto/README.md)")


@dataclass(frozen=True)
class RenderedBook:
    profile: str
    project: Path  # the temporary copy
    log: str
    seconds: float
    config: Path

    @property
    def book(self) -> Path:
        return self.project / "_book"

    def html_pages(self) -> list[Path]:
        return sorted(p for p in self.book.rglob("*.html") if "site_libs" not in p.parts)

    def pdf(self) -> Path:
        (pdf,) = self.book.glob("*.pdf")
        return pdf

    def docx(self) -> Path:
        (docx,) = self.book.glob("*.docx")
        return docx

    def results(self) -> dict:
        return json.loads((self.project / "results" / "results.json").read_text(encoding="utf-8"))

    def chapters(self) -> list[str]:
        """The book's chapter files of this profile (``index.qmd``, ``chapters/...``)."""
        import yaml

        name = "_quarto-timeseries.yml" if self.profile == "default" else f"_quarto-{self.profile}.yml"
        book = yaml.safe_load((self.project / name).read_text(encoding="utf-8"))["book"]
        return list(book.get("chapters", [])) + list(book.get("appendices", []))


def copy_sources(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in SOURCES:
        src = PROJECT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dest / name)
    (dest / "figures").mkdir()
    return dest


def planted_z_map(path: Path) -> Path:
    """A z map on the 2 mm MNI152 grid: N(0, 1) noise in the brain, two auditory blobs of z ~ 7 planted."""
    import nibabel as nib
    from nilearn.datasets import load_mni152_brain_mask

    mask = load_mni152_brain_mask(resolution=2)
    inside = np.asarray(mask.dataobj) > 0
    rng = np.random.default_rng(0)
    data = np.where(inside, rng.standard_normal(inside.shape), 0.0)
    ijk = np.indices(inside.shape).reshape(3, -1).T
    xyz = nib.affines.apply_affine(mask.affine, ijk).reshape(*inside.shape, 3)
    for centre in ((52, -24, 8), (-52, -22, 8)):
        d2 = ((xyz - np.array(centre)) ** 2).sum(-1)
        data += np.where(inside, 7.0 * np.exp(-d2 / (2 * 5.0 ** 2)), 0.0)
    nib.save(nib.Nifti1Image(data.astype(np.float32), mask.affine), path)
    return path


def _config(project: Path, profile: str) -> Path:
    text = (project / "analysis.toml").read_text(encoding="utf-8")
    if profile == "default":
        text = re.sub(r'(?m)^dataset = "[a-z_]+"', 'dataset = "simulated"', text, count=1)
    else:
        zmap = planted_z_map(project / "planted_zmap.nii.gz")
        text = re.sub(r'(?m)^dataset = "[a-z_]+"', 'dataset = "statmap"', text, count=1)
        text = re.sub(r"(?ms)^\[statmap\].*?(?=^\[|\Z)", "", text)
        text += (f'\n[statmap]\npath = "{zmap}"\nstat = "z"\ncontrast = "listening"\n'
                 'direction = "listening > rest"\nsource = "planted z map of the render tests"\n'
                 'space = "MNI152NLin2009cAsym"\n')
    path = project / "render-test.toml"
    path.write_text(text, encoding="utf-8")
    return path


def render(dest: Path, profile: str = "default") -> RenderedBook:
    """Copy the sources into ``dest`` and run ``quarto render`` there (all formats); fails on a non-zero exit."""
    quarto = quarto_command()
    project = copy_sources(dest)
    config = _config(project, profile)
    env = {**os.environ, "ANALYSIS_CONFIG": str(config), "MPLBACKEND": "Agg",
           "PATH": f"{Path(quarto).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [quarto, "render"] + ([] if profile == "default" else ["--profile", profile])
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=RENDER_TIMEOUT)
    seconds = time.perf_counter() - start
    log = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
    (project / "render.log").write_text(log, encoding="utf-8")
    if proc.returncode != 0:
        pytest.fail(f"quarto render {profile} exited {proc.returncode}; log tail:\n{log[-3000:]}")
    return RenderedBook(profile=profile, project=project, log=log, seconds=seconds, config=config)
