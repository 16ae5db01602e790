"""A whole study against a plain sequential nilearn script, at the reference size.

A simulated study of 8 subjects x 2 runs (``analysis.study.simulate_study``: each run 67x79x64 voxels of 3 mm x 84
scans, TR 7 s, fMRIPrep-like derivatives with motion confounds) is generated once, then two commands are run
alternately in fresh processes (A B A B ...), each from an empty output folder:

(project) ``python -m analysis study --config <cfg>``: every subject as one Dask task on a LocalCluster (one
    single-threaded worker per core), each run through the whole single-run analysis (GLM with the six motion
    confounds, thresholds, labelled cluster tables, random-field inference, 16 figures; calibration and DMN
    analysis as ``--first-level`` says), fixed effects per subject, then the group level: SecondLevelModel, six
    thresholds, a labelled cluster table, ``non_parametric_inference`` (``--n-perm`` sign flips, voxel and
    cluster-size FWE), the group DMN test, BIDS derivatives and ``study.json``;
(plain) a sequential nilearn script: per subject ``FirstLevelModel(t_r=7, noise_model="ar1", hrf_model="spm",
    drift_model="cosine", high_pass=0.01).fit(runs, events, confounds)`` (nilearn's own fixed effects across the
    runs) and ``compute_contrast("listening", output_type="effect_size")``; then ``SecondLevelModel().fit`` on the
    8 maps, the z map and ``threshold_stats_img`` FDR q < 0.05. No figures, no tables.

Printed: wall time of each (median, min-max), the project/plain ratio (median of the pairwise ratios), time per
subject, and peak memory: of the plain process, and of each Dask worker (PSS of the worker process and its figure
processes, sampled every 50 ms; the largest worker is shown) beside the scheduler/client process.

    python bench/bench_study.py                       # 8 x 2, 3 repeats each: about 10 minutes on 2 cores
    python bench/bench_study.py --repeat 1 --first-level lean   # calibration and first-level DMN off
    python bench/bench_study.py --subjects 4 --runs 2 --n-workers 2

Needs only the project's own dependencies (Dask distributed, nilearn); reads atlases from ``NILEARN_DATA`` (default
``../shared/nilearn_data`` beside the project). Prints its figures; it is not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_report import _rss_kb, _tree  # noqa: E402  PSS of a process, and its tree

ROOT = Path(__file__).resolve().parents[1]
MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]

PLAIN = r'''
import sys, glob, warnings
warnings.simplefilter("ignore")
from pathlib import Path
import pandas as pd
from nilearn.glm.first_level import FirstLevelModel
from nilearn.glm.second_level import SecondLevelModel
from nilearn.glm import threshold_stats_img
root = Path(sys.argv[1]); out = Path(sys.argv[2])
motion = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
maps = []
for sub in sorted(p.name for p in root.glob("sub-*")):
    deriv = root / "derivatives" / "fmriprep" / sub / "func"
    bolds = sorted(deriv.glob(f"{sub}_task-listening*_desc-preproc_bold.nii.gz"))
    events, confounds = [], []
    for bold in bolds:
        stem = bold.name.split("_space-")[0]
        events.append(pd.read_csv(root / sub / "func" / f"{stem}_events.tsv", sep="\t"))
        confounds.append(pd.read_csv(deriv / f"{stem}_desc-confounds_timeseries.tsv", sep="\t")[motion].fillna(0))
    model = FirstLevelModel(t_r=7.0, noise_model="ar1", hrf_model="spm", drift_model="cosine", high_pass=0.01,
                            minimize_memory=True)
    model.fit([str(b) for b in bolds], events=events, confounds=confounds)
    maps.append(model.compute_contrast("listening", output_type="effect_size"))
design = pd.DataFrame({"intercept": [1.0] * len(maps)})
group = SecondLevelModel().fit(maps, design_matrix=design)
z = group.compute_contrast("intercept", output_type="z_score")
thr, cut = threshold_stats_img(z, alpha=0.05, height_control="fdr", two_sided=True)
out.mkdir(parents=True, exist_ok=True)
z.to_filename(out / "group_z.nii.gz")
print(f"plain: {len(maps)} subjects, FDR |z| > {cut:.2f}")
'''


def _config(root: Path, out: Path, first_level: str, n_perm: int, n_workers: int) -> Path:
    lean = first_level == "lean"
    text = f"""
[data]
dataset = "bids"
[bids]
root = "{root}"
task = "listening"
space = "MNI152NLin2009aSym"
confounds = {MOTION!r}
[calibration]
enabled = {str(not lean).lower()}
[dmn]
enabled = {str(not lean).lower()}
[output]
dir = "{out}"
[study]
n_perm = {n_perm}
tfce = false
n_workers = {n_workers}
memory_limit = "3GiB"
""".replace("'", '"')
    path = out.parent / f"{out.name}.toml"
    path.write_text(text)
    return path


def _timed(cmd: list[str], env: dict) -> tuple[float, int, int, str]:
    """Wall time (s), peak PSS (bytes) of the command's own process, peak of its largest child subtree, stdout."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_main, peak_child = 0, 0

    def sample():
        nonlocal peak_main, peak_child
        while proc.poll() is None:
            try:
                peak_main = max(peak_main, _rss_kb(proc.pid))
                children = []
                for task in os.listdir(f"/proc/{proc.pid}/task"):
                    with open(f"/proc/{proc.pid}/task/{task}/children") as fh:
                        children += [int(c) for c in fh.read().split()]
                for child in children:  # a Dask worker process and its figure processes
                    peak_child = max(peak_child, sum(_rss_kb(p) for p in _tree(child)))
            except OSError:
                pass
            time.sleep(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    th.join()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed:\n{err[-3000:]}")
    return wall, peak_main * 1024, peak_child * 1024, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subjects", type=int, default=8)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--n-workers", type=int, default=0, help="LocalCluster workers (0 = one per core)")
    ap.add_argument("--n-perm", type=int, default=1000)
    ap.add_argument("--first-level", choices=("default", "lean"), default="default",
                    help="default: the single-run analysis as configured by default; lean: calibration and DMN off")
    ap.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "bench_study_data"))
    args = ap.parse_args(argv)

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("PYTHONHASHSEED", "0")
    env.setdefault("MPLBACKEND", "Agg")
    shared = ROOT.parent / "shared" / "nilearn_data"
    if "NILEARN_DATA" not in env and shared.exists():
        env["NILEARN_DATA"] = str(shared)
    data = Path(args.data) / f"{args.subjects}x{args.runs}"
    if not (data / "truth.json").exists():
        print(f"simulating {args.subjects} subjects x {args.runs} runs in {data} ...", flush=True)
        code = ("import sys; from analysis.study import simulate_study\n"
                "if __name__ == '__main__':\n"
                f"    simulate_study({str(data)!r}, {args.subjects}, {args.runs}, seed=0, n_jobs=2)")
        subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True)
    work = Path(tempfile.mkdtemp(prefix="bench_study_"))
    plain_script = work / "plain.py"
    plain_script.write_text(PLAIN)
    walls: dict[str, list[float]] = {"project": [], "plain": []}
    mem: dict[str, list[int]] = {"project_main": [], "project_worker": [], "plain": []}
    try:
        for i in range(args.repeat):
            for which in ("project", "plain"):
                out = work / f"{which}{i}"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                if which == "project":
                    cfg = _config(data, out, args.first_level, args.n_perm, args.n_workers)
                    cmd = [sys.executable, "-m", "analysis", "study", "--config", str(cfg), "--quiet"]
                else:
                    cmd = [sys.executable, str(plain_script), str(data), str(out)]
                wall, peak_main, peak_child, stdout = _timed(cmd, env)
                walls[which].append(wall)
                if which == "project":
                    mem["project_main"].append(peak_main)
                    mem["project_worker"].append(peak_child)
                else:
                    mem["plain"].append(peak_main)
                print(f"  {which:7s} #{i + 1}: {wall:6.1f} s   {stdout.strip().splitlines()[-1][:150]}", flush=True)
                shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def stats(xs):
        return f"{statistics.median(xs):6.1f} s ({min(xs):.1f}-{max(xs):.1f})"

    ratios = [a / b for a, b in zip(walls["project"], walls["plain"])]
    n = args.subjects
    gb = 1024 ** 3
    print(f"\n{n} subjects x {args.runs} runs, {os.cpu_count()} cores, first level: {args.first_level}, "
          f"{args.n_perm} sign flips, {args.repeat} repeats")
    print(f"  project (fmri-report study): {stats(walls['project'])}   {statistics.median(walls['project']) / n:.1f} s "
          "per subject")
    print(f"  plain nilearn, sequential:   {stats(walls['plain'])}   {statistics.median(walls['plain']) / n:.1f} s "
          "per subject")
    print(f"  ratio project / plain: {statistics.median(ratios):.2f} (pairwise {', '.join(f'{r:.2f}' for r in ratios)})")
    print(f"  peak memory: plain {max(mem['plain']) / gb:.2f} GB; project: largest Dask worker (with its figure "
          f"processes) {max(mem['project_worker']) / gb:.2f} GB, scheduler/client process "
          f"{max(mem['project_main']) / gb:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
