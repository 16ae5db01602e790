"""Every chapter's Python cells run in a fresh kernel, in order; references and citations resolve."""

import os

import pytest

from conftest import PROJECT
from quarto_exec import (bib_keys, book_chapters, citations_in, execute_chapter, labels_in, refs_in,
                         visible_text)

CHAPTERS = book_chapters(PROJECT)


@pytest.fixture(scope="module")
def executed(sim_results, sim_config_path):
    """All chapters executed against the session's simulated results (config via ANALYSIS_CONFIG)."""
    old = os.environ.get("ANALYSIS_CONFIG")
    os.environ["ANALYSIS_CONFIG"] = str(sim_config_path)
    try:
        return {p.name: execute_chapter(p, PROJECT) for p in CHAPTERS if p.suffix == ".qmd"}
    finally:
        if old is None:
            os.environ.pop("ANALYSIS_CONFIG")
        else:
            os.environ["ANALYSIS_CONFIG"] = old


def test_book_lists_existing_chapters():
    assert CHAPTERS and all(p.exists() for p in CHAPTERS)


def test_every_chapter_executes(executed):
    assert set(executed) == {p.name for p in CHAPTERS}
    for ch in executed.values():
        assert all("Traceback" not in o for o in ch.outputs), ch.path
        assert all(v.strip() for v in ch.inline_values), f"{ch.path}: an inline expression printed nothing"


def test_every_cross_reference_has_its_label(executed):
    sources = "\n".join(visible_text(ch.source, "timeseries") + "\n".join(ch.outputs) for ch in executed.values())
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
