"""Tests on what a real ``quarto render`` wrote (HTML, typst PDF, Word), not on the sources.

One render per profile per session (``rendered_default``, ``rendered_statmap`` in conftest.py, tests/rendered.py).
"""

from __future__ import annotations

import re

import pytest
from rendered import (UNRESOLVED_REF, image_problems, log_problems, pdf_overflow, pdf_text, reference_problems,
                      squash, visible_text)

from analysis import text


PROFILES = ["rendered_default", "rendered_statmap"]


@pytest.fixture(params=PROFILES)
def book(request):
    return request.getfixturevalue(request.param)


def _pdf_text(book) -> str:
    return pdf_text(book.pdf())


def _docx_text(book) -> str:
    import docx

    doc = docx.Document(str(book.docx()))
    parts = [p.text for p in doc.paragraphs]
    for table in doc.tables:
        for row in table.rows:
            parts.extend(cell.text for cell in row.cells)
    return "\n".join(parts)


def _headlines(book) -> list[str]:
    """Headline numbers of results.json as the report formats them: primary voxel count, top peak and its z."""
    res = book.results()
    c = next(iter(res["contrasts"].values()))
    primary = next(t for t in c["thresholds"] if t["spec"]["key"] == c["primary_key"])
    out = [text.fmt_k(primary["n_pos"]), f"{primary['z_threshold']:.2f}"]
    cols = c["clusters"]["columns"]
    rows = [dict(zip(cols, r)) for r in c["clusters"]["data"] if dict(zip(cols, r))["Sign"] == "+"]
    assert rows, "the planted signal must give at least one positive cluster"
    top = max(rows, key=lambda r: float(r["Peak Stat"]))
    out += [text.fmt_mni((top["X"], top["Y"], top["Z"])), text.fmt_z(top["Peak Stat"])]
    return out


# --- the render log ------------------------------------------------------------------------------------------

def test_render_log_has_no_error_traceback_or_unexpected_warning(book):
    bad = log_problems(book.log)
    assert not bad, f"{book.profile} render log:\n" + "\n".join(bad)


def test_the_render_executes_no_chapter(book):
    """The chapters include what the pre-render step wrote (analysis/pages.py): no kernel, nothing frozen."""
    assert "Starting python3 kernel" not in book.log
    assert not (book.project / "_freeze").exists()


def test_every_value_and_part_is_filled_in_every_format(book):
    """No ``[key]{.value}`` left unfilled (analysis/values.lua) and no shortcode left in the HTML, PDF or Word."""
    texts = {page.name: visible_text(page) for page in book.html_pages()}
    texts["pdf"], texts["docx"] = _pdf_text(book), _docx_text(book)
    for name, shown in texts.items():
        assert not re.search(r"\?(r|provenance)\.[a-z]|\{\.value\}|\{\{<|>\}\}", shown), f"{name}: unfilled value"


# --- HTML ----------------------------------------------------------------------------------------------------

def test_html_has_no_unresolved_reference(book):
    problems = reference_problems(book.html_pages())
    assert not problems, "\n".join(problems)


def test_every_image_exists_and_is_not_empty(book):
    n, problems = image_problems(book.html_pages())
    assert not problems, "\n".join(problems)
    assert n >= 3


def test_html_loads_nothing_from_another_host(book):
    """Static half of the offline check (the browser test records real requests)."""
    for page in [*book.html_pages(), *book.book.glob("site_libs/**/*.css")]:
        body = page.read_text(encoding="utf-8", errors="replace")
        for tag in re.findall(r"<(?:script|link|iframe|img)\b[^>]*>", body):
            m = re.search(r"\b(?:src|href)=\"(https?:)?//", tag)
            if m and "rel=\"" in tag and re.search(r"rel=\"(?!stylesheet|icon|preload|modulepreload)", tag):
                continue  # an ordinary hyperlink-like <link> (e.g. rel="canonical") is not loaded
            assert not m, f"{page.name}: loads {tag[:160]}"
        assert "fonts.googleapis" not in body and "@import url(http" not in body, page.name


def test_headline_numbers_are_in_the_html(book):
    pages = " ".join(squash(visible_text(p)) for p in book.html_pages())
    for value in _headlines(book):
        assert value in pages, f"{book.profile}: {value!r} not in the HTML"


def test_cross_reference_links_point_to_existing_targets(book):
    ids = {}
    for page in book.html_pages():
        ids[page.resolve()] = set(re.findall(r"\bid=\"([^\"]+)\"", page.read_text(encoding="utf-8")))
    n = 0
    for page in book.html_pages():
        for href in re.findall(r"<a\b[^>]*class=\"quarto-xref\"[^>]*href=\"([^\"]+)\"|"
                               r"<a\b[^>]*href=\"([^\"]+)\"[^>]*class=\"quarto-xref\"",
                               page.read_text(encoding="utf-8")):
            href = href[0] or href[1]
            path, _, frag = href.partition("#")
            target = (page.parent / path).resolve() if path else page.resolve()
            assert target in ids, f"{page.name}: {href} names a missing page"
            assert not frag or frag in ids[target], f"{page.name}: {href}: no #{frag} on {target.name}"
            n += 1
    assert n >= 5


def test_keywords_only_on_the_home_page(book):
    for page in book.html_pages():
        body = page.read_text(encoding="utf-8")
        if page.name == "index.html" and page.parent == book.book:
            assert "Keywords:" in visible_text(page)
        else:
            assert 'class="keywords"' not in body and "Keywords" not in visible_text(page), page.name


# --- PDF (typst) and Word --------------------------------------------------------------------------------------

def test_pdf_has_numbers_resolved_references_and_one_bibliography(book):
    pdf = _pdf_text(book)
    flat = squash(pdf)
    assert not UNRESOLVED_REF.search(flat) and "??" not in flat
    for value in _headlines(book):
        assert value in flat, f"{book.profile}: {value!r} not in the PDF text"
    assert "Bibliography" not in flat, "typst's own bibliography page besides the References chapter"
    refs = pdf.split("\f")
    ref_pages = [p for p in refs if re.match(r"\s*References\s*\n", p)]
    assert ref_pages and "Abraham" in ref_pages[0], "the References chapter lists the cited works"


def test_nothing_runs_off_a_pdf_page(book):
    """A long table breaks across pages (its header repeated) instead of running over the footer: no text below
    any page's number (the checklist table once did, 88 words below page 38)."""
    problems = pdf_overflow(book.pdf())
    assert not problems, "\n".join(problems)


def test_every_figure_and_table_the_pdf_cites_exists(book):
    flat = squash(_pdf_text(book))
    cited = set(re.findall(r"\b(Figure|Table) (\d+\.\d+)\b", flat))
    captions = set(re.findall(r"\b(Figure|Table) (\d+\.\d+):", flat))
    assert captions, "no numbered captions in the PDF"
    missing = sorted(f"{k} {n}" for k, n in cited - captions)
    assert not missing, f"cited but not in the PDF: {missing}"


def test_docx_has_the_headline_numbers_and_every_figure(book):
    import docx

    body = squash(_docx_text(book))
    assert not UNRESOLVED_REF.search(body)
    for value in _headlines(book):
        assert value in body, f"{book.profile}: {value!r} not in the DOCX"
    doc = docx.Document(str(book.docx()))
    images = [r for r in doc.part.rels.values() if "image" in r.reltype]
    assert len(images) >= 3
    assert all(len(r.target_part.blob) > 1000 for r in images)
    cited = set(re.findall(r"\b(Figure|Table) (\d+\.\d+)\b", body))
    captions = set(re.findall(r"\b(Figure|Table) (\d+\.\d+):", body))
    assert not sorted(cited - captions), f"cited but not in the DOCX: {sorted(cited - captions)}"


def test_the_rendered_report_had_the_atlases(book):
    """With the atlas data present (``NILEARN_DATA``), the rendered report labels and analyses with them: a
    render in another folder must not lose them (a relative ``NILEARN_DATA`` once did, silently)."""
    from conftest import atlas_dir

    if atlas_dir("fsl") is None or atlas_dir("yeo_2011") is None:
        pytest.skip("no atlas data here")
    import re

    for page in book.html_pages():
        text_ = re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8"))
        for atlas in ("Harvard-Oxford cortical", "Yeo 2011", "Schaefer 2018"):
            assert f"{atlas}: download failed" not in text_, (page.name, atlas)
        assert "no Harvard-Oxford atlas could be loaded" not in text_, page.name
