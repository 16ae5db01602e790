"""``fmri-report render`` renders only what changed (analysis/render.py).

The first tests need no Quarto: what counts as a prose edit, the frozen result it patches, the plan against the
last render's stamp on a small fake book, the copies the PDF and Word books are rendered in, and the commands run
(a fake ``quarto`` that records them), the search index kept in order, and the projects this command leaves to a
plain ``quarto render`` (chapters or outputs outside the project). The last one renders the real book twice: in
full, then after a one-word edit, which must render that page alone, without a kernel, and give the book a plain
``quarto render`` of the same edit gives (every page, the search index, the PDF's and the Word file's text).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from analysis import render
from analysis.render import patch_frozen, plan_render, signature, source_hash, source_state, write_stamp

CHAPTER = """# Methods {#sec-methods}

```{python}
#| include: false
from analysis import load_results
res = load_results()
```

The design matrix is shown in @fig-design and the weights
in @tbl-contrasts, as configured.

::: {#fig-design}
```{python}
print("![](../figures/design.png)")
```

Design matrix with `{python} res.n` columns.
:::

A closing paragraph of plain prose.
"""

FROZEN = """# Methods {#sec-methods}


The design matrix is shown in @fig-design and the weights
in @tbl-contrasts, as configured.

::: {#fig-design}

::: {#a1b2c3d4 .cell execution_count=2}

::: {.cell-output .cell-output-display}
![](../figures/design.png)
:::
:::


Design matrix with 13 columns.
:::

A closing paragraph of plain prose.
"""


# ----------------------------------------------------------------------------- what a prose edit is

def test_signature_is_blind_to_prose_and_sees_everything_else():
    same = CHAPTER.replace("as configured", "as written in the configuration")
    assert signature(same) == signature(CHAPTER)
    assert signature(CHAPTER.replace("A closing", "A final\n\nclosing")) == signature(CHAPTER)  # a new paragraph
    for changed in (CHAPTER.replace("# Methods", "# Method"),                     # a heading
                    CHAPTER.replace("{#fig-design}", "{#fig-matrix}"),             # a label
                    CHAPTER.replace("res = load_results()", "res = load_results(None)"),  # code
                    CHAPTER.replace("columns.", "columns (`{python} res.k`)."),   # inline code
                    CHAPTER.replace("as configured", "as configured [@friston1998]"),  # a citation
                    CHAPTER.replace("@fig-design and", "and"),                     # a cross-reference
                    CHAPTER.replace("plain prose.", "plain prose.\n\n## More {#sec-more}")):
        assert signature(changed) != signature(CHAPTER), changed


def test_a_prose_edit_patches_the_frozen_result_line_for_line():
    new = CHAPTER.replace("as configured", "as configured here")
    assert patch_frozen(CHAPTER, new, FROZEN) == FROZEN.replace("as configured", "as configured here")
    inserted = CHAPTER.replace("A closing paragraph", "One more line.\nA closing paragraph")
    assert patch_frozen(CHAPTER, inserted, FROZEN) == FROZEN.replace("A closing", "One more line.\nA closing")
    deleted = CHAPTER.replace("in @tbl-contrasts, as configured.\n", "")
    assert signature(deleted) != signature(CHAPTER) and patch_frozen(CHAPTER, deleted, FROZEN) is None
    two = new.replace("plain prose", "ordinary prose")
    assert patch_frozen(CHAPTER, two, FROZEN) == (FROZEN.replace("as configured", "as configured here")
                                                   .replace("plain prose", "ordinary prose"))


def test_a_patch_is_refused_when_the_lines_cannot_be_placed_exactly_once():
    new = CHAPTER.replace("A closing paragraph", "A closing, edited, paragraph")
    twice = FROZEN + "\nA closing paragraph of plain prose.\n"  # the same line twice (say, in a cell's output)
    assert patch_frozen(CHAPTER, new, twice) is None
    assert patch_frozen(CHAPTER, new, FROZEN.replace("A closing paragraph", "Another paragraph")) is None
    assert patch_frozen(CHAPTER, CHAPTER.replace("columns.", "columns!"), FROZEN) is None  # inline code line
    assert patch_frozen(CHAPTER, CHAPTER.replace('print("!', 'print( "!'), FROZEN) is None  # code


# ----------------------------------------------------------------------------- the plan, on a small fake book

QUARTO_YML = """project:
  type: book
  output-dir: _book
  pre-render: python -m analysis --prerender
profile:
  default: main
book:
  title: A book
format:
  html:
    toc: true
  typst:
    toc: true
  docx:
    toc: true
"""


def _fake_book(root: Path) -> Path:
    """A rendered-looking book: two chapters (one with code, frozen), pages, print books, Quarto's xref index."""
    root.mkdir(parents=True)
    (root / "_quarto.yml").write_text(QUARTO_YML)
    (root / "_quarto-main.yml").write_text("book:\n  chapters:\n    - index.qmd\n    - chapters/02-methods.qmd\n")
    (root / "index.qmd").write_text("# Preface {.unnumbered}\n\nPlain text.\n")
    (root / "chapters").mkdir()
    (root / "chapters" / "02-methods.qmd").write_text(CHAPTER)
    (root / "figures").mkdir()
    (root / "figures" / "design.png").write_bytes(b"png")
    frozen = root / "_freeze" / "chapters" / "02-methods" / "execute-results"
    frozen.mkdir(parents=True)
    result = {"engine": "jupyter", "markdown": FROZEN, "supporting": [], "filters": [], "includes": {}}
    (frozen / "html.json").write_text(json.dumps({"hash": source_hash(CHAPTER), "result": result}))
    for fmt in ("typ", "docx"):
        (frozen / f"{fmt}.json").symlink_to(frozen / "html.json")
    book = root / "_book"
    (book / "chapters").mkdir(parents=True)
    for page in ("index.html", "chapters/02-methods.html", "A-book.pdf", "A-book.docx"):
        (book / page).write_text(page)
    (book / "search.json").write_text(json.dumps(SEARCH))
    xref = root / ".quarto" / "xref"
    xref.mkdir(parents=True)
    (xref / "INDEX").write_text(json.dumps({"index.qmd": {"index.html": "x1"},
                                            "chapters/02-methods.qmd": {"02-methods.html": "x2"}}))
    (xref / "x1").write_text("{}")
    (xref / "x2").write_text("{}")
    return root


SEARCH = [{"objectID": "index.html", "href": "index.html", "text": "Plain text."},
          {"objectID": "chapters/02-methods.html", "href": "chapters/02-methods.html", "text": "old"},
          {"objectID": "chapters/02-methods.html#sec-a", "href": "chapters/02-methods.html#sec-a", "text": "old a"},
          {"objectID": "references.html", "href": "references.html", "text": "References."}]


@pytest.fixture
def book(tmp_path, monkeypatch):
    monkeypatch.setattr(render, "_hook_state", lambda project: {"prerender": "stamp", "provenance": "commit"})
    root = _fake_book(tmp_path / "book")
    write_stamp(root, ["html", "typst", "docx"], source_state(root, None))
    return root


ALL = ["html", "typst", "docx"]


def test_plan_nothing_then_pages_for_a_prose_edit(book):
    assert plan_render(book, None, ALL).kind == "nothing"
    path = book / "chapters" / "02-methods.qmd"
    path.write_text(CHAPTER.replace("as configured", "as configured here"))
    plan = plan_render(book, None, ALL)
    assert plan.kind == "pages" and plan.chapters == ["chapters/02-methods.qmd"], plan.reason
    frozen = plan.patches["chapters/02-methods.qmd"]
    assert frozen["hash"] == source_hash(path.read_text()) and "as configured here" in frozen["result"]["markdown"]
    assert plan_render(book, None, ["html"]).kind == "pages"


@pytest.mark.parametrize("change, reason", [
    (lambda b: (b / "chapters" / "02-methods.qmd").write_text(CHAPTER.replace("{#fig-design}", "{#fig-x}")),
     "more than prose"),
    (lambda b: (b / "chapters" / "02-methods.qmd").write_text(CHAPTER.replace("# Methods", "# Method")),
     "more than prose"),
    (lambda b: (b / "chapters" / "02-methods.qmd").write_text(CHAPTER.replace("load_results()", "load_results(1)")),
     "more than prose"),
    (lambda b: (b / "_quarto.yml").write_text(QUARTO_YML + "\n# edited\n"), "configuration"),
    (lambda b: (b / "_book" / "chapters" / "02-methods.html").write_text("rendered by someone else"), "output"),
    (lambda b: (b / "_book" / "A-book.pdf").unlink(), "output"),
    (lambda b: shutil.rmtree(b / ".quarto"), "cross-reference index"),
    (lambda b: (b / "render-stamp-gone").touch() or (b / render.STAMP).unlink(), "no stamp"),
    (lambda b: (b / "_quarto-main.yml").write_text("book:\n  chapters:\n    - index.qmd\n"), "configuration"),
])
def test_plan_is_a_full_render_whenever_in_doubt(book, change, reason):
    (book / "index.qmd").write_text("# Preface {.unnumbered}\n\nPlain text, edited.\n")  # a prose edit as well
    change(book)
    plan = plan_render(book, None, ALL)
    assert plan.kind == "full" and reason in plan.reason, plan


def test_plan_is_a_full_render_on_a_new_day_and_for_other_results(book, monkeypatch):
    import datetime

    real = datetime.date

    class Tomorrow(real):
        @classmethod
        def today(cls):
            return real.fromordinal(real.today().toordinal() + 1)

    monkeypatch.setattr(render.datetime, "date", Tomorrow)
    assert plan_render(book, None, ALL).kind == "full"
    monkeypatch.undo()
    for state in ({"prerender": "stamp", "provenance": "another commit"}, {"prerender": "new", "provenance": "commit"},
                  {"prerender": None, "provenance": None}):
        monkeypatch.setattr(render, "_hook_state", lambda project: state)
        assert "results" in plan_render(book, None, ALL).reason


# ----------------------------------------------------------------------------- the copies and the commands

def test_print_copy_renders_one_format_from_copied_sources_and_freeze(book, tmp_path):
    import yaml

    copy = render.print_copy(book, ["typst"], tmp_path / "copy")
    config = yaml.safe_load((copy / "_quarto.yml").read_text())
    assert list(config["format"]) == ["typst"] and "pre-render" not in config["project"]
    qmd = copy / "chapters" / "02-methods.qmd"
    assert qmd.is_file() and not qmd.is_symlink() and not (copy / "chapters").is_symlink()
    assert (copy / "figures").is_symlink() and not (copy / "_book").exists()
    frozen = copy / "_freeze" / "chapters" / "02-methods" / "execute-results"
    assert not (frozen / "typ.json").is_symlink() and json.loads((frozen / "typ.json").read_text())["hash"]


FAKE_QUARTO = """#!{python}
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
with open({log!r}, "a") as f:
    f.write(json.dumps([os.getcwd(), args]) + "\\n")
out = Path("_book")
out.mkdir(exist_ok=True)
if "--to" in args:
    formats = [args[args.index("--to") + 1]]
else:  # the formats of the project (a print copy has only its own)
    import yaml
    formats = list(yaml.safe_load(open("_quarto.yml"))["format"])
for fmt in formats:
    ext = {{"typst": ".pdf", "docx": ".docx"}}.get(fmt)
    if ext:
        (out / ("A-book" + ext)).write_text("new " + fmt)
if "html" in formats:  # as Quarto does: each rendered page's entries replaced by href, or appended
    pages = [a[:-4] + ".html" for a in args if a.endswith(".qmd")] or ["index.html", "chapters/02-methods.html"]
    index = out / "search.json"
    docs = json.loads(index.read_text()) if index.exists() and "--to" in args and len(args) > 3 else []
    for page in pages:
        new = {{"objectID": page, "href": page, "text": "new"}}
        hit = [i for i, d in enumerate(docs) if d["href"] == page]
        if hit:
            docs[hit[0]] = new
        else:
            docs.append(new)
    index.write_text(json.dumps(docs, indent=2))
sys.exit(int(os.environ.get("FAKE_QUARTO_STATUS", "0")))
"""


@pytest.fixture
def quarto(tmp_path):
    log = tmp_path / "quarto.log"
    fake = tmp_path / "bin" / "quarto"
    fake.parent.mkdir()
    fake.write_text(FAKE_QUARTO.format(python=sys.executable, log=str(log)))
    fake.chmod(0o755)
    return fake, log


def _calls(log: Path, project: Path) -> list[tuple[str, list[str]]]:
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return [("project" if Path(cwd) == project.resolve() else "copy", args) for cwd, args in calls]


@pytest.mark.parametrize("cores, load, copies", [(4, 0.0, 2), (4, 9.0, 1), (2, 0.0, 1)])
def test_a_prose_edit_renders_its_page_and_the_print_books_in_copies(book, quarto, monkeypatch, cores, load, copies):
    """One copy per print book when each has a core beside the HTML render and the machine is not busy; else one
    copy for both (a busy machine, or 2 cores)."""
    fake, log = quarto
    monkeypatch.setattr(render.os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(render.os, "cpu_count", lambda: cores)
    (book / "chapters" / "02-methods.qmd").write_text(CHAPTER.replace("as configured", "as configured here"))
    assert render.render_book(str(fake), book, []) == 0
    calls = sorted(_calls(log, book))
    assert calls == [("copy", ["render"])] * copies + [
        ("project", ["render", "chapters/02-methods.qmd", "--to", "html", "--use-freezer"])]
    assert (book / "_book" / "A-book.pdf").read_text() == "new typst"  # moved in from its copy
    assert (book / "_book" / "A-book.docx").read_text() == "new docx"
    assert "as configured here" in (book / "_freeze" / "chapters" / "02-methods" / "execute-results"
                                    / "typ.json").read_text()  # the patched result, through the link
    assert plan_render(book, None, ALL).kind == "nothing"  # the stamp is the new state
    assert not list((book / ".quarto" / "fmri-report").iterdir())  # copies removed
    # the page's entries where they were, the stale section entry gone, the others untouched
    assert json.loads((book / "_book" / "search.json").read_text()) == [
        SEARCH[0], {"objectID": "chapters/02-methods.html", "href": "chapters/02-methods.html", "text": "new"},
        SEARCH[3]]


def test_the_search_index_is_put_back_in_order_or_the_html_book_is_rendered(tmp_path):
    out = tmp_path / "_book"
    out.mkdir()
    (out / "search.json").write_text(json.dumps(SEARCH))
    page = {"chapters/02-methods.html"}
    before = render.detach_search_entries(out, page)
    assert before == SEARCH and json.loads((out / "search.json").read_text()) == [SEARCH[0], SEARCH[3]]
    fresh = [{"href": "chapters/02-methods.html", "text": "new"}, {"href": "chapters/02-methods.html#sec-b", "text": "b"}]
    (out / "search.json").write_text(json.dumps([SEARCH[0], SEARCH[3], *fresh]))  # Quarto appends them
    assert render.reattach_search_entries(out, page, before) is None
    assert json.loads((out / "search.json").read_text()) == [SEARCH[0], *fresh, SEARCH[3]]
    # in doubt: another page's entry changed, or the page lost every entry
    (out / "search.json").write_text(json.dumps([{**SEARCH[0], "text": "changed"}, SEARCH[3], *fresh]))
    assert "other pages" in render.reattach_search_entries(out, page, before)
    (out / "search.json").write_text(json.dumps([SEARCH[0], SEARCH[3]]))
    assert "no entry for chapters/02-methods.html" in render.reattach_search_entries(out, page, before)
    assert render.detach_search_entries(tmp_path, page) is None  # no index: nothing to keep


@pytest.mark.parametrize("hostile", [
    lambda b: (b / "_quarto-main.yml").write_text("book:\n  chapters:\n    - index.qmd\n    - ../outside.qmd\n"),
    lambda b: (b / "_quarto-main.yml").write_text(f"book:\n  chapters:\n    - {b.parent / 'outside.qmd'}\n"),
    lambda b: (b / "_quarto.yml").write_text(QUARTO_YML.replace("output-dir: _book", "output-dir: ../out")),
    lambda b: (b / "chapters" / "02-methods.qmd").unlink() or (b / "chapters" / "02-methods.qmd").symlink_to(
        b.parent / "outside.qmd"),
])
def test_chapters_or_outputs_outside_the_project_get_a_plain_quarto_render(book, quarto, hostile):
    fake, log = quarto
    outside = book.parent / "outside.qmd"
    outside.write_text(CHAPTER)
    (book / "chapters" / "02-methods.qmd").write_text(CHAPTER.replace("as configured", "as configured here"))
    hostile(book)
    assert render.render_book(str(fake), book, []) == 0
    assert _calls(log, book) == [("project", ["render"])]
    assert outside.read_text() == CHAPTER and not (book.parent / "outside").exists()
    assert not (book / render.STAMP).exists()


def test_a_label_edit_renders_the_whole_book(book, quarto, monkeypatch):
    fake, log = quarto
    monkeypatch.setattr(render.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setattr(render.os, "cpu_count", lambda: 4)
    (book / "chapters" / "02-methods.qmd").write_text(CHAPTER.replace("{#fig-design}", "{#fig-matrix}"))
    frozen = book / "_freeze" / "chapters" / "02-methods" / "execute-results" / "html.json"
    data = json.loads(frozen.read_text())
    data["hash"] = source_hash((book / "chapters" / "02-methods.qmd").read_text())  # as Quarto would execute it
    frozen.write_text(json.dumps(data))
    assert render.render_book(str(fake), book, ["--profile", "main"]) == 0
    calls = sorted(_calls(log, book))  # (the print books start once every chapter is frozen: here at once)
    assert calls == [("copy", ["render", "--profile", "main"])] * 2 + [  # one copy per print book, in parallel
        ("project", ["render", "--profile", "main", "--to", "html"])]
    assert (book / "_book" / "A-book.pdf").read_text() == "new typst"


def test_other_arguments_go_to_a_plain_quarto_render(book, quarto):
    fake, log = quarto
    assert render.render_book(str(fake), book, ["--to", "pdf", "-M", "x:y"]) == 0
    assert _calls(log, book) == [("project", ["render", "--to", "pdf", "-M", "x:y"])]
    assert not (book / render.STAMP).exists()  # the outputs changed under the stamp


def test_a_profile_with_its_own_pre_render_gets_a_plain_quarto_render(book, quarto, monkeypatch, capsys):
    """The study report's profile (``_quarto-study.yml`` sets its own pre-render step): ``fmri-report render
    --profile study`` is ``quarto render --profile study``, and the command runs no single-run analysis first."""
    fake, log = quarto
    (book / "_quarto-study.yml").write_text("project:\n  pre-render: python -m analysis.study_report --prerender\n"
                                            "book:\n  chapters:\n    - index.qmd\n")
    assert render.profile_hook(book, "study") == "python -m analysis.study_report --prerender"
    assert render.profile_hook(book, "main") is None
    assert render.render_book(str(fake), book, ["--profile", "study", "--to", "html"]) == 0
    assert _calls(log, book) == [("project", ["render", "--profile", "study", "--to", "html"])]
    assert not (book / render.STAMP).exists()

    from analysis import __main__ as cli
    from analysis import pipeline

    def no_analysis(*args, **kwargs):
        raise AssertionError("the single-run analysis ran before the study render")

    monkeypatch.setattr(pipeline, "run", no_analysis)
    monkeypatch.chdir(book)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    log.write_text("")
    assert cli.main(["render", "--profile", "study"]) == 0
    assert _calls(log, book) == [("project", ["render", "--profile", "study"])]


def test_a_whole_render_whose_hook_could_not_stamp_runs_it_again(book, quarto, monkeypatch):
    """The pre-render hook leaves no stamp for results written moments before it (a run just before the render);
    a whole render then runs it once more at the end, so the next prose edit is not a whole render again."""
    fake, log = quarto
    none = {"prerender": None, "provenance": "commit"}
    states = iter([none, none, {"prerender": "late", "provenance": "commit"}])  # plan, end of render, re-run
    monkeypatch.setattr(render, "_hook_state", lambda project: next(states))
    reruns = []
    monkeypatch.setattr(render, "_rerun_hook", lambda project, env, profile: reruns.append((project, profile)))
    (book / render.STAMP).unlink()
    assert render.render_book(str(fake), book, ["--to", "html"]) == 0
    assert reruns == [(book.resolve(), None)]
    assert json.loads((book / render.STAMP).read_text())["prerender"] == "late"


def test_a_failed_html_render_leaves_no_stamp(book, quarto, monkeypatch):
    fake, _ = quarto
    (book / "chapters" / "02-methods.qmd").write_text(CHAPTER.replace("as configured", "as configured here"))
    monkeypatch.setenv("FAKE_QUARTO_STATUS", "4")
    assert render.render_book(str(fake), book, []) == 4
    assert not (book / render.STAMP).exists()


# ----------------------------------------------------------------------------- the real book

def _visible(path: Path) -> str:
    return re.sub(r"<[^>]+>", " ", re.sub(r"(?s)<(script|style)\b.*?</\1>", " ", path.read_text(encoding="utf-8")))


CELL_ID = re.compile(r"\b[0-9a-f]{8}\b(?= \.cell|\" class=\"cell)")  # Quarto's random cell ids (a new one per execution)


def _pdf_text(path: Path) -> str:
    return subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout


def _docx_text(path: Path) -> str:
    import docx

    doc = docx.Document(str(path))
    return "\n".join([p.text for p in doc.paragraphs]
                     + [c.text for t in doc.tables for row in t.rows for c in row.cells])


def test_one_word_edit_renders_only_its_page_and_the_book_is_that_of_a_full_render(tmp_path):
    """The incremental render against a plain ``quarto render`` of the same edit in a copy of the same project
    (same results, figures and parts; no chapter executes code in either): every page, the search index, the
    PDF's and the Word file's text are the same."""
    from rendered import _config, copy_sources, quarto_command

    quarto = quarto_command()
    project = copy_sources(tmp_path / "book")
    config = _config(project, "default")

    def env(root):
        return {**os.environ, "ANALYSIS_CONFIG": str(root / config.name), "MPLBACKEND": "Agg",
                "PATH": f"{Path(quarto).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    cmd = [sys.executable, "-m", "analysis", "render"]
    first = subprocess.run(cmd, cwd=project, env=env(project), capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "full: no stamp" in first.stdout
    book = project / "_book"
    pages = {p: p.read_bytes() for p in book.rglob("*.html") if "site_libs" not in p.parts}
    assert len(pages) >= 10 and len(list(book.glob("*.pdf"))) == 1 and len(list(book.glob("*.docx"))) == 1

    # the reference: the project as rendered (results, figures, chapter parts), without its outputs and stamp
    ref = tmp_path / "full"
    shutil.copytree(project, ref, symlinks=True,
                    ignore=shutil.ignore_patterns("_book", ".quarto", f"{render.STAMP}*", "__pycache__"))
    chapter = Path("chapters") / "02-methods.qmd"
    for root in (project, ref):
        text = (root / chapter).read_text(encoding="utf-8")
        assert "The design matrix is shown" in text
        (root / chapter).write_text(text.replace("The design matrix is shown", "The design matrix is zebrafied"),
                                    encoding="utf-8")

    second = subprocess.run(cmd, cwd=project, env=env(project), capture_output=True, text=True, timeout=600)
    log = second.stdout + second.stderr
    assert second.returncode == 0, log[-3000:]
    assert "pages: prose edits in chapters/02-methods.qmd" in log and "Starting python3 kernel" not in log
    assert "cannot be trusted" not in log
    page = book / "chapters" / "02-methods.html"
    changed = [p for p, before in pages.items() if p.read_bytes() != before]
    assert changed == [page], changed  # every other page as it was
    assert "zebrafied" in _visible(page) and "?@" not in _visible(page)
    assert "zebrafied" in (book / "search.json").read_text(encoding="utf-8")

    full = subprocess.run([quarto, "render"], cwd=ref, env=env(ref), capture_output=True, text=True, timeout=900)
    assert full.returncode == 0, (full.stdout + full.stderr)[-3000:]
    assert "Starting python3 kernel" not in full.stdout + full.stderr  # no chapter executes code
    ref_book = ref / "_book"

    def same(text: str) -> str:
        return CELL_ID.sub("cellid", text.replace(str(ref), str(project)))

    ref_pages = sorted(p.relative_to(ref_book) for p in ref_book.rglob("*.html") if "site_libs" not in p.parts)
    assert ref_pages == sorted(p.relative_to(book) for p in pages)
    for rel in ref_pages:
        ours, theirs = same((book / rel).read_text(encoding="utf-8")), same((ref_book / rel).read_text("utf-8"))
        assert ours == theirs, (rel, next((a, b) for a, b in zip(ours.splitlines(), theirs.splitlines()) if a != b))
    ours = json.loads(same((book / "search.json").read_text(encoding="utf-8")))
    assert ours == json.loads(same((ref_book / "search.json").read_text(encoding="utf-8")))  # entries and order
    assert any("zebrafied" in d["text"] for d in ours if d["href"].startswith("chapters/02-methods.html"))
    assert not any("design matrix is shown" in d["text"] for d in ours)  # nothing stale
    (pdf,), (ref_pdf,) = book.glob("*.pdf"), ref_book.glob("*.pdf")
    assert "zebrafied" in _pdf_text(pdf) and _pdf_text(pdf) == _pdf_text(ref_pdf)
    (word,), (ref_word,) = book.glob("*.docx"), ref_book.glob("*.docx")
    assert "zebrafied" in _docx_text(word) and _docx_text(word) == _docx_text(ref_word)

    assert not (project / "_freeze").exists() and not (ref / "_freeze").exists()  # nothing to freeze

    # a new section (a heading and a label) would change other pages: the whole book is rendered
    (project / chapter).write_text((project / chapter).read_text() + "\n## More {#sec-more}\n\nText.\n")
    assert plan_render(project, None, ["html", "typst", "docx"]).kind == "full"
