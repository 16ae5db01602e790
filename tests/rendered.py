"""Real ``quarto render`` of the book into a temporary copy of the project, shared by the render and browser tests.

The copy holds the project's sources only (no ``_book``, ``_freeze``, results or figures of the work tree), so a
render starts cold, as in CI, and never touches the repository's own outputs. The default profile renders the
simulated run (``data.dataset = "simulated"``, whatever the machine can fetch) to html, typst and docx; the
``statmap`` profile renders a z map that :func:`planted_z_map` makes (two auditory blobs on the MNI152 grid).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

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


def squash(s: str) -> str:
    """Whitespace (line breaks of the PDF text included) as single spaces; soft hyphens dropped."""
    return re.sub(r"\s+", " ", s.replace("\u00ad", ""))


def visible_text(page: Path) -> str:
    """The text a reader sees on an HTML page (no scripts or styles, entities decoded)."""
    body = page.read_text(encoding="utf-8")
    body = re.sub(r"(?s)<(script|style)\b.*?</\1>", " ", body)
    return html.unescape(re.sub(r"<[^>]+>", " ", body))


def _pdftotext(pdf: Path, *options: str) -> str:
    """What ``pdftotext <options> <pdf> -`` prints (Debian's poppler-utils, which ``.ci/run`` installs)."""
    if not shutil.which("pdftotext"):
        pytest.fail("pdftotext is missing (Debian package poppler-utils; .ci/run installs it)")
    return subprocess.run(["pdftotext", *options, str(pdf), "-"], capture_output=True, text=True, check=True).stdout


def pdf_text(pdf: Path) -> str:
    """The text of a PDF (``pdftotext``, pages separated by form feeds)."""
    return _pdftotext(pdf, "-enc", "UTF-8")


def pdf_overflow(pdf: Path) -> list[str]:
    """Text printed below a page's number (the footer): content that ran off the bottom of the page, e.g. a
    table that did not break across pages. One line per page that has any."""
    xml = _pdftotext(pdf, "-bbox")
    problems = []
    for n, page in enumerate(re.findall(r"(?s)<page\b(.*?)</page>", xml), start=1):
        width, height = (float(v) for v in re.search(r'width="([\d.]+)" height="([\d.]+)"', page).groups())
        words = [(float(x0), float(y0), float(x1), html.unescape(w)) for x0, y0, x1, _, w in re.findall(
            r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)</word>', page)]
        # the page number: a number (or roman numeral) centred in the bottom eighth of the page
        footer = [y0 for x0, y0, x1, w in words if re.fullmatch(r"\d+|[ivxlc]+", w) and y0 > 0.875 * height
                  and abs((x0 + x1) / 2 - width / 2) < 0.05 * width]
        if not footer:
            continue
        below = [w for x0, y0, x1, w in words if y0 > max(footer) + 1]
        if below:
            problems.append(f"page {n}: {len(below)} words below the page number, e.g. {' '.join(below[:8])!r}")
    return problems


def log_problems(log: str) -> list[str]:
    """The lines of a render log that report an error, a traceback or a warning not in EXPECTED_LOG_WARNINGS."""
    return [line.strip()[:200] for line in log.splitlines()
            if re.search(r"Traceback|Error|ERROR|Exception|WARN|Warning|warning", line)
            and not any(p.search(line) for p in EXPECTED_LOG_WARNINGS)]


def reference_problems(pages: list[Path]) -> list[str]:
    """Unresolved cross-references and citations on the HTML pages, one line per page that has any."""
    problems = []
    for page in pages:
        visible = visible_text(page)
        found = unresolved_references(page.read_text(encoding="utf-8"), visible)
        if found:
            problems.append(f"{page.name}: unresolved cross-references {found[:5]}")
        if re.search(r"\?\?|\[\?[a-z]", visible):
            problems.append(f"{page.name}: unresolved citation")
    return problems


def image_problems(pages: list[Path], min_bytes: int = 1) -> tuple[int, list[str]]:
    """(number of local ``<img>`` on the pages, problems): an image from another host, missing, or smaller
    than ``min_bytes``."""
    n, problems = 0, []
    for page in pages:
        for src in re.findall(r"<img\b[^>]*\bsrc=\"([^\"]+)\"", page.read_text(encoding="utf-8")):
            if src.startswith("data:"):
                continue
            if urlparse(src).scheme:
                problems.append(f"{page.name}: image from another host: {src}")
                continue
            target = (page.parent / unquote(src.split("#")[0])).resolve()
            if not (target.is_file() and target.stat().st_size >= min_bytes):
                problems.append(f"{page.name}: {src} missing or smaller than {min_bytes} bytes")
            n += 1
    return n, problems


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
        return html_pages(self.book)

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


def html_pages(book: Path) -> list[Path]:
    """The HTML pages of a rendered book folder (not Quarto's ``site_libs``)."""
    return sorted(p for p in book.rglob("*.html") if "site_libs" not in p.parts)


def quarto_render(project: Path, config: Path, *args: str) -> tuple[str, float]:
    """``quarto render *args`` in ``project`` with ``config`` as the analysis config: the log (also saved as
    ``render.log``) and the wall time; fails the test on a non-zero exit, with the log's tail."""
    quarto = quarto_command()
    env = {**os.environ, "ANALYSIS_CONFIG": str(config), "MPLBACKEND": "Agg",
           "PATH": f"{Path(quarto).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    start = time.perf_counter()
    proc = subprocess.run([quarto, "render", *args], cwd=project, env=env, capture_output=True, text=True,
                          timeout=RENDER_TIMEOUT)
    seconds = time.perf_counter() - start
    log = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
    (project / "render.log").write_text(log, encoding="utf-8")
    if proc.returncode != 0:
        pytest.fail(f"quarto render {' '.join(args)} exited {proc.returncode}; log tail:\n{log[-3000:]}")
    return log, seconds


def render(dest: Path, profile: str = "default") -> RenderedBook:
    """Copy the sources into ``dest`` and run ``quarto render`` there (all formats); fails on a non-zero exit."""
    quarto_command()  # skip before copying anything when Quarto is missing
    project = copy_sources(dest)
    config = _config(project, profile)
    log, seconds = quarto_render(project, config, *([] if profile == "default" else ["--profile", profile]))
    return RenderedBook(profile=profile, project=project, log=log, seconds=seconds, config=config)
