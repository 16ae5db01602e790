"""The chapter executor behaves as Quarto's Jupyter engine: setup cell, markdown engine, kept-alive kernels."""

from __future__ import annotations

import os
import time

from quarto_exec import KernelDaemon, execute_chapter, has_code

CHAPTER = """# A chapter

```{python}
#| include: false
import helper
```

The value is `{python} helper.VALUE` and the working directory is `{python} __import__("os").getcwd()`.

```{python}
print(helper.VALUE * 2)
```
"""


def _project(tmp_path, value: int):
    (tmp_path / "helper.py").write_text(f"VALUE = {value}\n")
    (tmp_path / "chapter.qmd").write_text(CHAPTER)
    (tmp_path / "notes.qmd").write_text("# Notes\n\nNo code here, so no kernel.\n")
    return tmp_path


def test_a_file_without_code_starts_no_kernel(tmp_path):
    project = _project(tmp_path, 1)
    assert not has_code((project / "notes.qmd").read_text())
    assert has_code((project / "chapter.qmd").read_text())
    done = execute_chapter(project / "notes.qmd", project)
    assert done.outputs == [] and done.inline_values == []


def test_kept_kernel_gives_the_fresh_kernels_outputs_and_reloads_changed_modules(tmp_path, monkeypatch):
    project = _project(tmp_path, 21)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(project), os.environ.get("PYTHONPATH", "")]))
    chapter = project / "chapter.qmd"
    fresh = execute_chapter(chapter, project)
    assert fresh.inline_values == ["21\n", f"{project}\n"]
    assert fresh.outputs[-1] == "42\n"
    with KernelDaemon(project) as daemon:
        first = execute_chapter(chapter, project, daemon=daemon)
        again = execute_chapter(chapter, project, daemon=daemon)
        assert (first.outputs, first.inline_values) == (fresh.outputs, fresh.inline_values)
        assert (again.outputs, again.inline_values) == (fresh.outputs, fresh.inline_values)
        assert daemon.restarts == 0
        time.sleep(0.01)
        (project / "helper.py").write_text("VALUE = 5\n")
        os.utime(project / "helper.py", (time.time() + 5, time.time() + 5))  # a visibly newer mtime
        changed = execute_chapter(chapter, project, daemon=daemon)
        assert daemon.restarts == 1  # a module the chapter imported changed: Quarto restarts the kernel
        assert changed.inline_values[0] == "5\n" and changed.outputs[-1] == "10\n"


def test_kept_kernel_starts_each_render_with_an_empty_namespace(tmp_path):
    (tmp_path / "state.qmd").write_text("```{python}\nprint('marker' in globals())\nmarker = 1\n```\n")
    with KernelDaemon(tmp_path) as daemon:
        renders = [execute_chapter(tmp_path / "state.qmd", tmp_path, daemon=daemon).outputs for _ in range(2)]
    assert renders == [["False\n"], ["False\n"]]
