"""Render time of the study report (``quarto render --profile study``) as the number of subjects grows.

For each study size (default 4 and 8 subjects of 2 runs, simulated as in tests/study_render.py but without broken
runs) the study is computed once, then the HTML book is rendered three times in the same project copy:

* ``cold``: no frozen chapters, no report step (the pre-render step draws every figure and writes every page);
* ``warm``: nothing changed (frozen chapters, figures and pages kept: what a prose edit of a subject costs);
* ``all formats``: html, typst PDF and Word, warm.

The subject pages are plain Markdown written by the pre-render step (no Jupyter kernel), so only the pre-render's
figures and pandoc's time grow with the number of subjects. Prints one line per size and the load average.

    python bench/bench_study_render.py [--subjects 4 8] [--runs 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("MPLBACKEND", "Agg")
    import study_render as sr

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-study-render-") as tmp:
        for n in args.subjects:
            base = Path(tmp) / f"n{n}"
            project = sr.copy_study_sources(base / "project")
            bids = sr.simulate(base / "bids", n_subjects=n, n_runs=args.runs, broken=False)
            config = sr.write_config(project, bids)
            study_s = sr.compute(project, config, bids)
            _, cold = sr.quarto_render(project, config, "--profile", "study", "--to", "html")
            _, warm = sr.quarto_render(project, config, "--profile", "study", "--to", "html")
            _, every = sr.quarto_render(project, config, "--profile", "study")
            pages = len(list((project / "_book-study" / "chapters" / "study" / "subjects").glob("*.html")))
            rows.append((n, args.runs, study_s, cold, warm, every, pages))
            print(f"{n} subjects x {args.runs} runs: study {study_s:.1f} s; quarto render --profile study --to html: "
                  f"cold {cold:.1f} s, warm {warm:.1f} s; all formats (warm) {every:.1f} s; {pages} subject pages; "
                  f"load average {os.getloadavg()[0]:.2f}", flush=True)
            shutil.rmtree(base, ignore_errors=True)
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} cores")


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"bench took {time.perf_counter() - start:.0f} s")
