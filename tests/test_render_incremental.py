"""``fmri-report render`` renders only what changed (analysis/render.py).

The first tests need no Quarto: what counts as a prose edit, the frozen result it patches, the plan against the
last render's stamp on a small fake book, the copies the PDF and Word books are rendered in, and the commands run
(a fake ``quarto`` that records them). The last one renders the real book twice: in full, then after a one-word
edit, which must render that page alone, without a kernel, and show the word in every format.
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
from analysis.render import patch_frozen, plan_render, signature, source_hash, write_stamp

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
    for page in ("index.html", "chapters/02-methods.html", "search.json", "A-book.pdf", "A-book.docx"):
        (book / page).write_text(page)
    xref = root / ".quarto" / "xref"
    xref.mkdir(parents=True)
    (xref / "INDEX").write_text(json.dumps({"index.qmd": {"index.html": "x1"},
                                            "chapters/02-methods.qmd": {"02-methods.html": "x2"}}))
    (xref / "x1").write_text("{}")
    (xref / "x2").write_text("{}")
    return root


@pytest.fixture
def book(tmp_path, monkeypatch):
    monkeypatch.setattr(render, "_freeze_fingerprint", lambda project: "fingerprint")
    root = _fake_book(tmp_path / "book")
    write_stamp(root, None, ["html", "typst", "docx"])
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
    monkeypatch.setattr(render, "_freeze_fingerprint", lambda project: "other results")
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


@pytest.mark.parametrize("load, copies", [(0.0, 2), (9.0, 1)])
def test_a_prose_edit_renders_its_page_and_the_print_books_in_copies(book, quarto, monkeypatch, load, copies):
    fake, log = quarto
    monkeypatch.setattr(render.os, "getloadavg", lambda: (load, load, load))  # a busy machine: one copy for both
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


def test_a_label_edit_renders_the_whole_book(book, quarto, monkeypatch):
    fake, log = quarto
    monkeypatch.setattr(render.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
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


def test_a_failed_html_render_leaves_no_stamp(book, quarto, monkeypatch):
    fake, _ = quarto
    (book / "chapters" / "02-methods.qmd").write_text(CHAPTER.replace("as configured", "as configured here"))
    monkeypatch.setenv("FAKE_QUARTO_STATUS", "4")
    assert render.render_book(str(fake), book, []) == 4
    assert not (book / render.STAMP).exists()


# ----------------------------------------------------------------------------- the real book

def _visible(path: Path) -> str:
    return re.sub(r"<[^>]+>", " ", re.sub(r"(?s)<(script|style)\b.*?</\1>", " ", path.read_text(encoding="utf-8")))


def test_one_word_edit_renders_only_its_page_and_every_format_shows_it(tmp_path):
    from rendered import _config, copy_sources, quarto_command

    quarto = quarto_command()
    project = copy_sources(tmp_path / "book")
    config = _config(project, "default")
    env = {**os.environ, "ANALYSIS_CONFIG": str(config), "MPLBACKEND": "Agg",
           "PATH": f"{Path(quarto).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [sys.executable, "-m", "analysis", "render"]

    first = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "full: no stamp" in first.stdout
    book = project / "_book"
    pages = {p: p.read_bytes() for p in book.rglob("*.html") if "site_libs" not in p.parts}
    assert len(pages) >= 10 and len(list(book.glob("*.pdf"))) == 1 and len(list(book.glob("*.docx"))) == 1

    edited = project / "chapters" / "02-methods.qmd"
    edited.write_text(edited.read_text().replace("The design matrix is shown", "The design matrix is zebrafied"))
    second = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=600)
    log = second.stdout + second.stderr
    assert second.returncode == 0, log[-3000:]
    assert "pages: prose edits in chapters/02-methods.qmd" in log and "Starting python3 kernel" not in log
    page = book / "chapters" / "02-methods.html"
    changed = [p for p, before in pages.items() if p.read_bytes() != before]
    assert changed == [page], changed  # every other page as it was
    assert "zebrafied" in _visible(page) and "?@" not in _visible(page)
    assert "zebrafied" in (book / "search.json").read_text(encoding="utf-8")
    pdf = subprocess.run(["pdftotext", str(next(book.glob("*.pdf"))), "-"], capture_output=True, text=True).stdout
    assert "zebrafied" in pdf

    import docx

    assert any("zebrafied" in p.text for p in docx.Document(str(next(book.glob("*.docx")))).paragraphs)

    # the patched frozen result is what Quarto gets by executing the edited chapter (cell ids are random)
    frozen = project / "_freeze" / "chapters" / "02-methods" / "execute-results" / "html.json"
    patched = json.loads(frozen.read_text())
    run = subprocess.run([quarto, "render", "chapters/02-methods.qmd", "--to", "html"], cwd=project, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "Starting python3 kernel" in run.stdout + run.stderr
    executed = json.loads(frozen.read_text())
    ids = re.compile(r"\{#[0-9a-f]{8} \.cell")
    assert patched["hash"] == executed["hash"]
    assert ids.sub("{#id .cell", patched["result"]["markdown"]) == ids.sub("{#id .cell",
                                                                        executed["result"]["markdown"])

    # a new section (a heading and a label) would change other pages: the whole book is rendered
    edited.write_text(edited.read_text() + "\n## More {#sec-more}\n\nText.\n")
    assert plan_render(project, None, ["html", "typst", "docx"]).kind == "full"
