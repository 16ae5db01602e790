"""Time the real ``quarto render`` of the book (html + typst PDF + docx) beside the analysis it renders.

    python bench/bench_render.py [--repeat N] [--profile statmap]

In a temporary copy of the project (sources only; the simulated dataset), each step a fresh process:

- analysis, cold (``python -m analysis``, empty output folder) and cached (valid results, as a render sees them);
- ``quarto render`` and ``fmri-report render`` (``analysis/render.py``: only what changed since its last render,
  the PDF and Word books beside the HTML), alternated A B A B, each with the CPU time of its process tree:
  - cold: the analysis cached, no ``_parts/``, ``_book/``, ``.quarto/`` or render stamp (as in CI);
  - after a one-word prose edit in one chapter (plain: every page and both print books are rendered again;
    ``fmri-report render``: that page alone, and the print books beside it);
  - with nothing changed;
- the pre-render hook alone (``python -m analysis --prerender``): its fast path (nothing changed since the last
  render) and its full path (results re-verified);
- Quarto's own floor: the same book (same ``_quarto.yml``, chapters, title page, bibliography) with one line of
  text per chapter, no code and no pre-render hook, cold and after a one-word edit;
- where the time of a prose-edit render goes, from one more render at ``--log-level debug``: pre-render, each
  page's HTML pass, the typst and Word book passes, the rest.

The load average is printed with each row: other processes on the 2 cores stretch every wall time (the CPU time
less so).

Targets (issue 14): cold render of the three formats <= 40 s, re-render after a prose edit <= 10 s. The number of
Jupyter kernels each render started is printed too: none, as the chapters execute no code (``analysis/pages.py``).
Needs ``quarto`` on PATH (or in /opt/quarto/bin).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from rendered import _config, copy_sources  # noqa: E402  (the render tests' project copy and config)

PROJECT = Path(__file__).resolve().parents[1]
EDITED = "chapters/02-methods.qmd"


def _quarto() -> str:
    found = shutil.which("quarto") or shutil.which("quarto", path="/opt/quarto/bin")
    if not found:
        sys.exit("error: quarto not found; install it (../shared/quarto/README.md) or put it on PATH")
    return found


def _load() -> str:
    return "load " + "/".join(f"{x:.1f}" for x in os.getloadavg())


def _floor_project(project: Path, dest: Path) -> Path:
    """The book with one line of text per chapter: no code, no pre-render (what Quarto costs by itself)."""
    import re

    dest.mkdir()
    for name in ("_quarto.yml", "_quarto-timeseries.yml", "_quarto-statmap.yml", "references.bib", "report.scss",
                 "references.qmd", "_report-metadata.yml"):
        shutil.copy2(project / name, dest / name)
    quarto_yml = dest / "_quarto.yml"
    text = re.sub(r"(?m)^\s*pre-render:.*$", "", quarto_yml.read_text(encoding="utf-8"))
    quarto_yml.write_text(re.sub(r"(?m)^filters:\n([ \t]+.*\n)+", "", text), encoding="utf-8")  # no values to fill in
    for qmd in [project / "index.qmd", *sorted((project / "chapters").glob("*.qmd"))]:
        head = next(line for line in qmd.read_text(encoding="utf-8").splitlines() if line.startswith("# "))
        out = dest / qmd.relative_to(project)
        out.parent.mkdir(exist_ok=True)
        out.write_text(f"{head}\n\nOne paragraph of plain text in this chapter.\n", encoding="utf-8")
    return dest


def _timed_lines(cmd, cwd, env) -> list[tuple[float, str]]:
    """Run ``cmd``; every output line with the seconds since the start."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    lines = [(time.perf_counter() - start, line.rstrip("\n")) for line in proc.stdout]
    lines.append((time.perf_counter() - start, "EXIT"))
    if proc.wait() != 0:
        sys.exit(f"error: {' '.join(map(str, cmd))} exited {proc.returncode}")
    return lines


def _breakdown(lines: list[tuple[float, str]]) -> list[tuple[str, float]]:
    """Stages of a debug-level render log: pre-render, each page's HTML pass, the typst and Word book passes."""
    import re

    marks = []  # (time, stage name) where each stage starts
    for t, line in lines:
        plain = re.sub(r"\x1b\[[0-9;]*m", "", line).strip()
        if plain.startswith("Running script") and not marks:
            marks.append((t, "pre-render hook (python -m analysis --prerender)"))
        elif m := re.match(r"\[\s*\d+/\d+\] (\S+)", plain):
            marks.append((t, f"HTML pass: {m.group(1)}"))
        elif "leveloneanalysis.lua" in plain:
            marks.append((t, "book assembly"))
        elif plain.startswith("to: ") and marks and marks[-1][1] == "pandoc":
            fmt = plain[4:]
            marks[-1] = (marks[-1][0], "typst book (pandoc, typst compile)" if fmt.startswith("typst")
                         else "Word book (pandoc)" if fmt == "docx" else f"{fmt} book")
        elif plain == "pandoc --verbose --trace":
            marks.append((t, "pandoc"))
        elif "--to html --citeproc" in plain:
            marks.append((t, "HTML bibliography, search index, clean-up"))
    marks.append((lines[-1][0], "end"))
    rows = [("Quarto start-up", marks[0][0])]
    rows += [(name, marks[i + 1][0] - t) for i, (t, name) in enumerate(marks[:-1])]
    return rows


def _run(cmd, cwd, env) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(map(str, cmd))} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-2000:]}")
    return seconds, proc.stdout + proc.stderr


def _run_cpu(cmd, cwd, env) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds of the whole process tree (user + system of every waited-for descendant), output."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds, log = _run(cmd, cwd, env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), log


def _clean_render_state(project: Path) -> None:
    """A cold render: no chapter parts, frozen results, book, Quarto scratch or render stamp (as in CI)."""
    for sub in ("_parts", "_freeze", "_book", ".quarto"):
        shutil.rmtree(project / sub, ignore_errors=True)
    (project / ".render-stamp.json").unlink(missing_ok=True)


def _edit_one_word(project: Path, n: int) -> None:
    path = project / EDITED
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    in_code = False
    for i, line in enumerate(lines):  # the first prose line: outside code, not a heading, fence or div
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        if in_code or "`" in line:
            continue
        if line.strip() and not line.lstrip().startswith(("#", ":", "|", "@", "{", "[")) and " " in line:
            lines[i] = line.replace(" ", f" word{n} ", 1)
            break
    path.write_text("".join(lines), encoding="utf-8")


def _fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f} s"
    return f"{statistics.median(values):.1f} s ({min(values):.1f}–{max(values):.1f}, n={len(values)})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="repeats of each timing (default 3)")
    parser.add_argument("--profile", default="default", choices=["default", "statmap"])
    args = parser.parse_args(argv)
    quarto = _quarto()
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        project = copy_sources(Path(tmp))
        config = _config(project, args.profile)
        env = {**os.environ, "ANALYSIS_CONFIG": str(config), "MPLBACKEND": "Agg",
               "PATH": f"{Path(quarto).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        render = [quarto, "render"] + ([] if args.profile == "default" else ["--profile", args.profile])
        rows: dict[str, list[float]] = {}
        cpus: dict[str, list[float]] = {}
        row_loads: dict[str, list[float]] = {}
        kernels: dict[str, int] = {}
        loads = {"start": _load()}

        analysis = [sys.executable, "-m", "analysis", "--quiet"]
        for i in range(args.repeat):
            for sub in ("figures", "tables", "derivatives", "results", ".cache"):
                shutil.rmtree(project / sub, ignore_errors=True)
            (project / "figures").mkdir()
            rows.setdefault("analysis, cold (empty output folder)", []).append(_run(analysis, project, env)[0])
        for _ in range(args.repeat):
            rows.setdefault("analysis, cached results", []).append(_run(analysis, project, env)[0])

        # A B A B: the plain `quarto render` (A) and `fmri-report render` (B, analysis/render.py) alternate
        fmri = [sys.executable, "-m", "analysis", "render"] + ([] if args.profile == "default"
                                                               else ["--profile", args.profile])
        plain, ours = "quarto render", "fmri-report render"

        def timed(name, cmd):
            seconds, cpu, log = _run_cpu(cmd, project, env)
            rows.setdefault(name, []).append(seconds)
            cpus.setdefault(name, []).append(cpu)
            row_loads.setdefault(name, []).append(os.getloadavg()[0])
            kernels[name] = log.count("Starting python3 kernel")
            return log

        for i in range(args.repeat):
            for cmd, who in ((render, plain), (fmri, ours)):
                _clean_render_state(project)
                timed(f"{who}, cold (html + typst + docx; analysis cached)", cmd)
        word = 0
        for i in range(args.repeat):
            word += 1
            _edit_one_word(project, word)
            timed(f"{plain} after a one-word edit of {EDITED}", render)
            _run(fmri, project, env)  # (untimed) the stamp a `fmri-report render` leaves, which the plain render voided
            word += 1
            _edit_one_word(project, word)
            log = timed(f"{ours} after a one-word edit of {EDITED}", fmri)
            if "pages: prose edits" not in log:
                sys.exit(f"error: fmri-report render did not take the incremental path:\n{log[-3000:]}")
        for i in range(args.repeat):
            timed(f"{plain}, nothing changed", render)
            _run(fmri, project, env)
            timed(f"{ours}, nothing changed", fmri)
        loads["render"] = _load()

        prerender = [sys.executable, "-m", "analysis", "--quiet", "--prerender"]
        for _ in range(args.repeat):
            rows.setdefault("pre-render hook, nothing changed (fast path)", []).append(
                _run(prerender, project, env)[0])
        stamp = next(project.rglob("prerender-stamp.json"), None)
        for _ in range(args.repeat):
            if stamp is not None:
                stamp.unlink(missing_ok=True)
            rows.setdefault("pre-render hook, full path (results re-verified)", []).append(
                _run(prerender, project, env)[0])
        _run(prerender, project, env)  # leaves the stamp for the debug render below

        floor = _floor_project(project, Path(tmp) / "floor")
        floor_env = {k: v for k, v in env.items() if k != "ANALYSIS_CONFIG"}
        for i in range(args.repeat):
            for sub in ("_book", ".quarto"):
                shutil.rmtree(floor / sub, ignore_errors=True)
            rows.setdefault("Quarto's floor (text-only book), cold", []).append(_run(render, floor, floor_env)[0])
        for i in range(args.repeat):
            path = floor / EDITED
            path.write_text(path.read_text(encoding="utf-8").replace(" ", f" word{i} ", 1), encoding="utf-8")
            rows.setdefault("Quarto's floor (text-only book), after a one-word edit", []).append(
                _run(render, floor, floor_env)[0])
        loads["floor"] = _load()

        _edit_one_word(project, args.repeat)
        stages = _breakdown(_timed_lines(render + ["--log-level", "debug"], project, env))
        loads["breakdown"] = _load()

    version = subprocess.run([quarto, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"Quarto {version}, profile {args.profile}, {os.cpu_count()} cores; medians (min–max); CPU: user + system "
          "seconds of the process tree; load: 1-minute load average after each run")
    width = max(map(len, rows))
    targets = {"cold (html": "≤ 40 s", "one-word": "≤ 10 s"}
    for name, values in rows.items():
        target = next((t for k, t in targets.items() if k in name), "")
        k = f"{kernels[name]:>2} kernels" if name in kernels else ""
        cpu = f"CPU {statistics.median(cpus[name]):5.1f} s" if name in cpus else ""
        load = f"load {statistics.median(row_loads[name]):4.1f}" if name in row_loads else ""
        print(f"  {name:<{width}}  {_fmt(values):<24} {cpu:<13} {load:<9} {k:<11} "
              f"{('target ' + target) if target else ''}")
    print("machine load (1/5/15 min) at the start, after the renders, after the floor, after the breakdown: "
          + "; ".join(loads.values()))
    print(f"where a prose-edit render goes (one render of {EDITED}, --log-level debug, {loads['breakdown']}):")
    width = max(len(n) for n, _ in stages)
    total = sum(t for _, t in stages)
    for name, seconds in stages:
        print(f"  {name:<{width}}  {seconds:5.1f} s")
    print(f"  {'total':<{width}}  {total:5.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
