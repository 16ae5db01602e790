"""A real ``quarto render --profile study`` of a small simulated study (html, typst PDF, Word), checked like
test_render.py checks the single-run book: the log, references, images, and the headline numbers of study.json
in the text. One render per session (``rendered_study`` in conftest.py, tests/study_render.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

from rendered import (UNRESOLVED_REF, image_problems, log_problems, pdf_overflow, pdf_text, reference_problems,
                      squash, visible_text)

from analysis import text


def _visible_text(page: Path) -> str:
    return squash(visible_text(page))


def _page(study, rel: str) -> str:
    return _visible_text(study.book / rel)


def _contrast(study) -> dict:
    return next(iter(study.results()["contrasts"].values()))


def _rows(table: dict) -> list[dict]:
    return [dict(zip(table["columns"], r)) for r in table["data"]]


def test_render_log_has_no_error_traceback_or_unexpected_warning(rendered_study):
    bad = log_problems(rendered_study.log)
    assert not bad, "study render log:\n" + "\n".join(bad)
    print(f"\nstudy of 5 x 2 computed in {rendered_study.study_seconds:.1f} s, rendered (html, typst, docx) in "
          f"{rendered_study.seconds:.1f} s")


def test_the_study_render_executes_nothing_and_fills_in_every_value(rendered_study):
    """The study chapters include what the pre-render step wrote (_parts/study/): no kernel, every value shown."""
    assert "Starting python3 kernel" not in rendered_study.log
    parts = sorted(p.name for p in (rendered_study.project / "_parts" / "study").glob("*.md"))
    assert parts == ["keywords.md", "methods.md", "results.md", "simulated.md", "tbl-study-subjects.md"]
    for page in rendered_study.book.rglob("*.html"):
        body = page.read_text(encoding="utf-8")
        assert not re.search(r"\?(r|provenance)\.[a-z]|\{\.value\}|\{\{&lt;|\{\{<", body), page.name


def test_quarto_reads_the_generated_chapter_list_one_page_per_subject(rendered_study):
    """The pre-render step writes the subject pages and the chapter list; Quarto re-reads them before rendering."""
    index = (rendered_study.book / "index.html").read_text(encoding="utf-8")
    sidebar = index[index.find('id="quarto-sidebar"'):]
    subjects = [s["subject"] for s in rendered_study.results()["subjects"]]
    assert subjects == ["01", "02", "03", "04", "05"]
    for sub in subjects:
        assert (rendered_study.book / "chapters" / "study" / "subjects" / f"sub-{sub}.html").is_file()
        assert f"subjects/sub-{sub}.html" in sidebar
    order = [m.group(1) for m in re.finditer(r'href="\./([^"#]+)\.html"', sidebar)]
    assert order.index("chapters/study/03-subjects") < order.index("chapters/study/subjects/sub-01") \
        < order.index("references"), order


def test_html_has_no_unresolved_reference(rendered_study):
    problems = reference_problems(rendered_study.html_pages())
    assert not problems, "\n".join(problems)


def test_every_image_exists_and_is_not_empty(rendered_study):
    n, problems = image_problems(rendered_study.html_pages(), min_bytes=1000)
    assert not problems, "\n".join(problems)
    assert n >= 3 + 4  # the group figures and one map per subject in the group


def test_headline_group_numbers_of_study_json_are_in_the_html(rendered_study):
    c = _contrast(rendered_study)
    primary = next(t for t in c["thresholds"] if t["spec"]["key"] == c["primary_key"])
    assert primary["n_pos"] > 0, "the planted response must survive at the group level"
    home, results = _page(rendered_study, "index.html"), _page(rendered_study, "chapters/study/02-results.html")
    assert text.fmt_k(primary["n_pos"]) in home
    assert f"{primary['z_threshold']:.2f}" in home and f"{primary['z_threshold']:.2f}" in results
    top = max((r for r in _rows(c["clusters"]) if r["Sign"] == "+"), key=lambda r: float(r["Peak Stat"]))
    assert text.fmt_mni((top["X"], top["Y"], top["Z"])).replace(" mm", "") in results
    assert text.fmt_z(top["Peak Stat"]) in results
    assert text.fmt_z(c["z_max"]) in results
    perm = c["permutation"]
    assert f"{perm['n_perm']:,} sign flips" in results and text.fmt_num(perm["min_p"], 4) in results
    dmn = rendered_study.results()["dmn"]
    assert f"t({dmn['dof']}) = {text.fmt_z(dmn['t'])}" in results and text.fmt_p(dmn["p"]) in results


def test_subject_table_shows_runs_motion_tsnr_calibration_and_exclusions(rendered_study):
    page = _page(rendered_study, "chapters/study/03-subjects.html")
    assert "2 / 2" in page and "1 / 2" in page and "0 / 2" in page
    assert "left out" in page and "trial_type is empty or n/a" in page
    assert "sub-02/func/sub-02_task-listening_run-2_events.tsv" in page and "/tmp" not in page  # relative paths
    assert re.search(r"\btrustworthy\b", page)  # the runs' saved calibration
    s1 = next(s for s in rendered_study.results()["subjects"] if s["subject"] == "01")
    run = next(r for r in s1["runs"] if r["ok"])
    run_page = _page(rendered_study, "chapters/study/subjects/sub-01.html")
    assert text.fmt_num(run["mean_fd"], 3) in run_page and text.fmt_num(run["tsnr"], 1) in run_page


def test_subject_pages_explain_exclusions_and_link_their_downloads(rendered_study):
    left = _page(rendered_study, "chapters/study/subjects/sub-05.html")
    assert "sub-05 was left out of the group analysis" in left
    partial = _page(rendered_study, "chapters/study/subjects/sub-02.html")
    assert "run 2 was left out" in partial
    page = rendered_study.book / "chapters" / "study" / "subjects" / "sub-01.html"
    links = re.findall(r'href="([^"]+\.(?:nii\.gz|json))"', page.read_text(encoding="utf-8"))
    assert len(links) == 6  # effect, variance, z and their sidecars
    for href in links:
        assert (page.parent / unquote(href)).resolve().is_file(), href  # copied into the site


def test_nothing_runs_off_a_pdf_page_of_the_study_book(rendered_study):
    """A subject's long cluster table breaks across pages instead of running over the footer (it once printed
    its last rows on top of each other below the page number)."""
    problems = pdf_overflow(rendered_study.book / "study-report.pdf")
    assert not problems, "\n".join(problems)


def test_pdf_and_word_books_have_every_subject_and_the_headline(rendered_study):
    import docx

    c = _contrast(rendered_study)
    primary = next(t for t in c["thresholds"] if t["spec"]["key"] == c["primary_key"])
    pdf = squash(pdf_text(rendered_study.book / "study-report.pdf"))
    doc = docx.Document(str(rendered_study.book / "study-report.docx"))
    word = " ".join(p.text for p in doc.paragraphs)
    for body in (pdf, word):
        assert not UNRESOLVED_REF.search(body), UNRESOLVED_REF.search(body).group(0)
        assert text.fmt_k(primary["n_pos"]) in body
        for sub in ("01", "02", "03", "04", "05"):
            assert f"sub-{sub}" in body
