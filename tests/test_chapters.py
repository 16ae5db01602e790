"""Every chapter as Quarto reads it after the pre-render step: every part and value it names is written, no
chapter executes code, references and citations resolve."""


import pytest

from conftest import PROJECT
from book_sources import (INCLUDE_RE, bib_keys, book_chapters, citations_in, expand_chapter, labels_in, refs_in,
                         visible_text)

CHAPTERS = book_chapters(PROJECT)


@pytest.fixture(scope="module")
def executed(sim_results):
    """All chapters with the parts and values of the session's simulated results."""
    return {p.name: expand_chapter(p, PROJECT, sim_results) for p in CHAPTERS if p.suffix == ".qmd"}


def test_book_lists_existing_chapters():
    assert CHAPTERS and all(p.exists() for p in CHAPTERS)


def test_every_part_and_value_a_chapter_names_is_written(executed):
    assert set(executed) == {p.name for p in CHAPTERS}
    for ch in executed.values():
        assert all(v.strip() for v in ch.inline_values), f"{ch.path}: a value is empty"
        assert "{{<" not in ch.text, f"{ch.path}: a shortcode (Quarto expands them before the pre-render step)"


def test_no_chapter_executes_code():
    """A render starts no Jupyter kernel: no code cell and no inline expression in any chapter of any profile."""
    import re

    sources = list(PROJECT.glob("*.qmd")) + list((PROJECT / "chapters").rglob("*.qmd"))
    assert len(sources) > 10
    for path in sources:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*```+\s*\{[a-z]+[ ,}]|`\{[a-z]+\}", text, re.M), f"{path}: executable code"


def test_every_part_written_is_included_by_a_chapter(sim_results, executed):
    """No part is written that no chapter shows (a figure or table dropped from the book by mistake)."""
    from analysis import pages

    included = {m.group(1, 2) for ch in executed.values() for m in INCLUDE_RE.finditer(ch.source)}
    written = {(c, name) for c, parts in pages.chapter_parts(sim_results, PROJECT).items() for name in parts}
    assert written == included


def test_every_cross_reference_has_its_label(executed):
    sources = "\n".join(visible_text(ch.text, "timeseries") for ch in executed.values())
    labels, refs = labels_in(sources), refs_in(sources)
    assert refs, "the book should cross-reference its figures and tables"
    assert not refs - labels, f"references without a label: {sorted(refs - labels)}"
    figs_tbls = {l for l in labels if l.startswith(("fig-", "tbl-"))}
    assert figs_tbls <= refs, f"figures/tables never referenced: {sorted(figs_tbls - refs)}"


def test_every_citation_is_in_the_bibliography(executed):
    keys = bib_keys(PROJECT / "references.bib")
    text = "\n".join(ch.source + "\n".join(ch.outputs + ch.inline_values) for ch in executed.values())
    templates = "\n".join(p.read_text() for p in (PROJECT / "analysis" / "templates").glob("*.j2"))
    cited = citations_in(text) | citations_in(templates)
    assert cited, "the generated prose should cite its methods"
    assert not cited - keys, f"citations missing from references.bib: {sorted(cited - keys)}"


def test_labels_are_unique(executed):
    import re

    all_labels = []
    for ch in executed.values():
        all_labels += [a or b for a, b in re.findall(r"\{#((?:fig|tbl|sec)-[\w-]+)|#\|\s*label:\s*((?:fig|tbl|sec)-[\w-]+)",
                                                      ch.source)]
    assert len(all_labels) == len(set(all_labels))


def test_simulated_data_is_announced(executed):
    index = executed["index.qmd"]
    assert any("Simulated data" in o for o in index.outputs)
