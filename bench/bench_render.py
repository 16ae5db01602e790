"""Time the real ``quarto render`` of the book (html + typst PDF + docx) beside the analysis it renders.

    python bench/bench_render.py [--repeat N] [--profile statmap]

In a temporary copy of the project (sources only; the simulated dataset), each step a fresh process:

- analysis, cold (``python -m analysis``, empty output folder) and cached (valid results, as a render sees them);
- ``quarto render`` cold: the analysis cached, no ``_freeze/``, ``_book/`` or ``.quarto/`` (as in CI);
- ``quarto render`` after a one-word prose edit in one chapter (``freeze: auto`` re-executes that chapter only);
- ``quarto render`` with nothing changed.

Targets (issue 14): cold render of the three formats <= 40 s, re-render after a prose edit <= 10 s. The number of
Jupyter kernels each render started is printed too: one per chapter with code, whatever the number of formats.
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
from rendered import SOURCES, _config  # noqa: E402  (the render tests' project copy and config)

PROJECT = Path(__file__).resolve().parents[1]
EDITED = "chapters/02-methods.qmd"


def _quarto() -> str:
    found = shutil.which("quarto") or shutil.which("quarto", path="/opt/quarto/bin")
    if not found:
        sys.exit("error: quarto not found; install it (../shared/quarto/README.md) or put it on PATH")
    return found


def _run(cmd, cwd, env) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(map(str, cmd))} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-2000:]}")
    return seconds, proc.stdout + proc.stderr


def _copy(dest: Path) -> Path:
    for name in SOURCES:
        src = PROJECT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dest / name)
    (dest / "figures").mkdir()
    return dest


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
        if line.strip() and not line.lstrip().startswith(("#", ":", "|", "@")) and " " in line:
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
        project = _copy(Path(tmp))
        config = _config(project, args.profile)
        env = {**os.environ, "ANALYSIS_CONFIG": str(config), "MPLBACKEND": "Agg",
               "PATH": f"{Path(quarto).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        render = [quarto, "render"] + ([] if args.profile == "default" else ["--profile", args.profile])
        rows: dict[str, list[float]] = {}
        kernels: dict[str, int] = {}

        analysis = [sys.executable, "-m", "analysis", "--quiet"]
        for i in range(args.repeat):
            for sub in ("figures", "tables", "derivatives", "results", ".cache"):
                shutil.rmtree(project / sub, ignore_errors=True)
            (project / "figures").mkdir()
            rows.setdefault("analysis, cold (empty output folder)", []).append(_run(analysis, project, env)[0])
        for _ in range(args.repeat):
            rows.setdefault("analysis, cached results", []).append(_run(analysis, project, env)[0])

        for i in range(args.repeat):
            for sub in ("_freeze", "_book", ".quarto"):
                shutil.rmtree(project / sub, ignore_errors=True)
            seconds, log = _run(render, project, env)
            rows.setdefault("quarto render, cold (html + typst + docx; analysis cached)", []).append(seconds)
            kernels["quarto render, cold (html + typst + docx; analysis cached)"] = log.count("Starting python3 kernel")
        for i in range(args.repeat):
            _edit_one_word(project, i)
            seconds, log = _run(render, project, env)
            rows.setdefault(f"quarto render after a one-word edit of {EDITED}", []).append(seconds)
            kernels[f"quarto render after a one-word edit of {EDITED}"] = log.count("Starting python3 kernel")
        for _ in range(args.repeat):
            seconds, log = _run(render, project, env)
            rows.setdefault("quarto render, nothing changed", []).append(seconds)
            kernels["quarto render, nothing changed"] = log.count("Starting python3 kernel")

    version = subprocess.run([quarto, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"Quarto {version}, profile {args.profile}, {os.cpu_count()} cores; medians (min–max)")
    width = max(map(len, rows))
    targets = {"cold (html": "≤ 40 s", "one-word": "≤ 10 s"}
    for name, values in rows.items():
        target = next((t for k, t in targets.items() if k in name), "")
        k = f"{kernels[name]:>2} kernels" if name in kernels else ""
        print(f"  {name:<{width}}  {_fmt(values):<24} {k:<11} {('target ' + target) if target else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
