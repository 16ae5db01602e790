"""How long the report takes, against the seed notebook's own analysis in plain nilearn.

On the simulated dataset (config ``[data] dataset = "simulated"``, outputs in a temporary folder),
in one run and side by side (each timing in a fresh Python process, imports included):

(a) baseline: the seed notebook in plain nilearn -- load the saved NIfTI and events with
    nibabel/pandas, ``mean_img``, one ``FirstLevelModel(t_r=7, noise_model="ar1", hrf_model="spm",
    drift_model="cosine", high_pass=0.01)`` fit with events, the "listening" z map, the seed's five
    thresholds (``threshold_stats_img``: |z| > 3, fpr 0.001, fdr 0.05, fdr 0.05 + 10 voxels,
    bonferroni 0.05), ``get_clusters_table`` at the FDR threshold, and its figures (design matrix,
    z map, glass brain of the thresholded map, one stat map per threshold) saved as PNG;
(b) this project's whole analysis, cold: ``analysis.run(config, force=True)`` with empty output and
    cache folders, except the simulated dataset files, generated once beforehand for both (a) and (b);
(c) the same, warm (cache hit, as after a prose edit): ``analysis.run(config)``;
(d) the pre-render hook (``python -m analysis --prerender``) with the results cached: its full path, which writes
    the title page and everything the chapters show (``analysis/pages.py``; the chapters execute no code), and its
    fast path when nothing changed. The real ``quarto render`` is timed by ``bench/bench_render.py``.

Also: peak memory of (b) and the per-step breakdown of (b) from the "analysis" logger.

    python bench/bench_report.py                 # 3 repeats (medians), about 4 minutes on 2 cores
    python bench/bench_report.py --skip-chapters --repeat 5   # (a), (b), (c) only, about 1.5 minutes
    python bench/bench_report.py --repeat 5 --profile   # + cProfile hot spots of one cold run

Atlases come from ``NILEARN_DATA`` (default: ``../shared/nilearn_data`` next to the project, if present).
Prints its figures; it is not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BASELINE = r'''
import sys, time, json
t0 = time.perf_counter()
steps = {}
def mark(name):
    global t0
    t = time.perf_counter(); steps[name] = t - t0; t0 = t
import warnings
warnings.filterwarnings("ignore")
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import nibabel as nib
import pandas as pd
from nilearn.glm import threshold_stats_img
from nilearn.glm.first_level import FirstLevelModel
from nilearn.image import mean_img
from nilearn import plotting
from nilearn.reporting import get_clusters_table
mark("imports")
bold_path, events_path, out = sys.argv[1], sys.argv[2], sys.argv[3]
fmri_img = nib.load(bold_path)
fmri_img = nib.Nifti1Image(fmri_img.get_fdata(dtype="float32"), fmri_img.affine, fmri_img.header)
events = pd.read_csv(events_path, sep="\t")
mark("load")
mean = mean_img(fmri_img, copy_header=True)
mark("mean image")
model = FirstLevelModel(t_r=7, noise_model="ar1", hrf_model="spm", drift_model="cosine", high_pass=0.01)
model = model.fit(fmri_img, events)
mark("GLM fit (ar1)")
z_map = model.compute_contrast("listening", output_type="z_score")
mark("contrast")
thr = {
    "z3": threshold_stats_img(z_map, alpha=0.001, height_control=None, threshold=3),
    "fpr": threshold_stats_img(z_map, alpha=0.001, height_control="fpr"),
    "fdr": threshold_stats_img(z_map, alpha=0.05, height_control="fdr"),
    "fdr_cluster": threshold_stats_img(z_map, alpha=0.05, height_control="fdr", cluster_threshold=10),
    "bonferroni": threshold_stats_img(z_map, alpha=0.05, height_control="bonferroni"),
}
mark("thresholds")
table = get_clusters_table(z_map, stat_threshold=thr["fdr"][1], cluster_threshold=10)
mark("cluster table")
def save(fig, name):
    fig.savefig(f"{out}/{name}.png", dpi=150, bbox_inches="tight")
    plt.close(fig)
fig, ax = plt.subplots(figsize=(6, 5))
plotting.plot_design_matrix(model.design_matrices_[0], axes=ax)
save(fig, "design")
fig = plt.figure(figsize=(9, 3.2))
plotting.plot_stat_map(z_map, bg_img=mean, threshold=3, display_mode="ortho", figure=fig, title="listening")
save(fig, "zmap")
fig = plt.figure(figsize=(9, 3.2))
plotting.plot_glass_brain(thr["fdr_cluster"][0], figure=fig, colorbar=True, plot_abs=False, display_mode="lyrz")
save(fig, "glass")
for key, (img, cut) in thr.items():
    fig = plt.figure(figsize=(9, 3.2))
    plotting.plot_stat_map(img, bg_img=mean, threshold=cut if cut < 1e9 else None, display_mode="ortho",
                           figure=fig, title=key)
    save(fig, f"thr-{key}")
mark("figures (8 PNG)")
print(json.dumps(steps))
'''

COLD = r'''
import sys, time, json, logging
t_start = time.perf_counter()
records = []
class Stamp(logging.Handler):
    def emit(self, record):
        records.append((time.perf_counter(), record.getMessage()))
import analysis
from analysis import load_config, run
t_import = time.perf_counter()
log = logging.getLogger("analysis")
log.addHandler(Stamp()); log.setLevel(logging.INFO)
config = load_config(sys.argv[1])
profile = sys.argv[3] == "1"
if profile:
    import cProfile
    prof = cProfile.Profile(); prof.enable()
t0 = time.perf_counter()
run(config, force=True)
t1 = time.perf_counter()
if profile:
    prof.disable(); prof.dump_stats(sys.argv[4])
steps = [("imports", t_import - t_start)]
prev_t, prev_msg = t0, "set-up (config, cache check, lock)"
for t, msg in records:
    if "finished in" in msg or "up to date" in msg:
        continue
    steps.append((prev_msg, t - prev_t))
    prev_t, prev_msg = t, msg
steps.append((prev_msg, t1 - prev_t))
json.dump({"steps": steps, "run": t1 - t0}, open(sys.argv[2], "w"))
'''

WARM = r'''
from analysis import run
import sys
run(sys.argv[1])
'''


# ----------------------------------------------------------------------------- helpers

def _env(project: Path, config: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(project), *filter(None, [env.get("PYTHONPATH")])])
    env["ANALYSIS_CONFIG"] = str(config)
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def _rss_kb(pid: int) -> int:
    """Proportional set size (shared pages split between the processes sharing them), else RSS."""
    for path, key in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
        try:
            with open(path) as fh:
                for line in fh:
                    if line.startswith(key):
                        return int(line.split()[1])
        except OSError:
            continue
    return 0


def _tree(pid: int) -> list[int]:
    """pid and all its descendants (Linux /proc), from the cheap ``task/*/children`` lists when the kernel has them."""
    out, todo = [], [pid]
    try:
        while todo:
            p = todo.pop()
            out.append(p)
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        return out
    except FileNotFoundError:
        if len(out) > 1 or not os.path.exists(f"/proc/{pid}/task"):
            return out  # a process ended while we looked, or there is no /proc
    except OSError:
        pass
    return _tree_scan(pid)


def _tree_scan(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _timed(cmd: list[str], env: dict, cwd: Path, sample_memory: bool = False) -> tuple[float, int]:
    """Wall time of a subprocess and (optionally) the peak summed RSS (kB) of its process tree."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    if sample_memory:
        def sample():
            nonlocal peak
            while proc.poll() is None:
                peak = max(peak, sum(_rss_kb(p) for p in _tree(proc.pid)))
                time.sleep(0.05)
        th = threading.Thread(target=sample, daemon=True)
        th.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    if sample_memory:
        th.join()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed:\n{err[-3000:]}")
    _timed.last_stdout = out
    return wall, peak


def _max_rss_of_child(cmd: list[str], env: dict, cwd: Path) -> int:
    """ru_maxrss (kB) of the largest process among ``cmd`` and its descendants, via a wrapper process."""
    wrapper = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
               "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], env=env, cwd=cwd, check=True,
                         capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1])


def _clean_outputs(out: Path, keep: Path) -> None:
    """Empty the output and cache folders, except the pre-generated simulated dataset ``keep``."""
    for child in out.iterdir():
        if child.resolve() == keep.parent.parent.parent.resolve():  # <out>/.cache
            for sub in child.iterdir():
                if sub.resolve() != keep.parent.parent.resolve():  # <out>/.cache/simulated
                    shutil.rmtree(sub) if sub.is_dir() else sub.unlink()
        elif child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def _med(xs):
    return statistics.median(xs)


def _fmt(xs):
    return f"{_med(xs):7.2f} s  (min {min(xs):.2f}, max {max(xs):.2f}, n={len(xs)})"


# ----------------------------------------------------------------------------- main

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=3, help="repetitions of (a), (b), (c) (medians are reported)")
    p.add_argument("--project", type=Path, default=ROOT, help="project folder (default: this repository)")
    p.add_argument("--profile", action="store_true", help="cProfile one extra cold run; print the hot spots")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--skip-chapters", action="store_true", help="time only (a), (b) and (c)")
    args = p.parse_args(argv)
    project = args.project.resolve()
    if "NILEARN_DATA" not in os.environ and (project.parent / "shared" / "nilearn_data").is_dir():
        os.environ["NILEARN_DATA"] = str(project.parent / "shared" / "nilearn_data")

    tmp = Path(tempfile.mkdtemp(prefix="bench-report-"))
    out = tmp / "out"
    config = tmp / "analysis.toml"
    toml = (project / "analysis.toml").read_text()
    toml = toml.replace('dataset = "spm_auditory"', 'dataset = "simulated"')
    toml = "\n".join(f'dir = "{out}"' if line.split("#")[0].strip().startswith("dir =") else line
                     for line in toml.splitlines()) + "\n"
    config.write_text(toml)
    env = _env(project, config)
    py = sys.executable
    print(f"project {project}\nconfig  {config}\nNILEARN_DATA {os.environ.get('NILEARN_DATA', '(unset)')}\n"
          f"cores   {os.cpu_count()}; load average {os.getloadavg()[0]:.1f} at start\n")

    # the simulated dataset, generated once (it is an input of both (a) and (b))
    gen = ("import json, sys; from pathlib import Path; from analysis import load_config; "
           "from analysis.data import load_run; c = load_config(sys.argv[1]); "
           "cache = Path(c.output.cache_dir); cache = cache if cache.is_absolute() else Path(c.output.dir) / cache; "
           "r = load_run(c, cache_dir=cache); print(json.dumps(r.files))")
    files = json.loads(subprocess.run([py, "-c", gen, str(config)], env=env, cwd=project, check=True,
                                      capture_output=True, text=True).stdout.strip().splitlines()[-1])
    bold = next(f for n, f in files.items() if n.startswith("bold"))
    events = next(f for n, f in files.items() if n.startswith("events"))
    sim_folder = Path(bold).parent
    print(f"simulated dataset pre-generated in {sim_folder} (not timed in (a) or (b))\n")

    a_wall, a_steps, b_wall, b_run, b_steps, b_peak_tree, c_wall = [], [], [], [], [], [], []
    base_out = tmp / "baseline"
    for i in range(args.repeat):
        # (a)
        shutil.rmtree(base_out, ignore_errors=True)
        base_out.mkdir()
        wall, _ = _timed([py, "-c", BASELINE, bold, events, str(base_out)], env, project)
        a_wall.append(wall)
        a_steps.append(json.loads(_timed.last_stdout.strip().splitlines()[-1]))
        # (b)
        _clean_outputs(out, Path(bold))
        steps_file = tmp / f"steps-{i}.json"
        wall, peak = _timed([py, "-c", COLD, str(config), str(steps_file), "0", ""], env, project,
                            sample_memory=True)
        b_wall.append(wall)
        b_peak_tree.append(peak)
        info = json.loads(steps_file.read_text())
        b_run.append(info["run"])
        b_steps.append(info["steps"])
        # (c)
        for _ in range(1 if i else 2):  # one extra first: the OS file cache is warm for everybody
            wall, _ = _timed([py, "-c", WARM, str(config)], env, project)
        c_wall.append(wall)

    # peak memory of (b): the largest single process (ru_maxrss of the children)
    _clean_outputs(out, Path(bold))
    b_maxrss = _max_rss_of_child([py, "-c", COLD, str(config), str(tmp / "steps-mem.json"), "0", ""], env,
                                 project)

    # (d) the pre-render hook, which writes what the chapters show (the chapters execute no code): its full path
    # (title page, every chapter's parts and values from the cached results) and its fast path (nothing changed)
    from analysis.prerender import stamp_file  # noqa: E402

    hook = [py, "-m", "analysis", "-q", "--prerender", "--config", str(config)]
    d_full, d_fast = [], []
    if not args.skip_chapters:
        _timed(hook, env, tmp)  # the parts written once, so the OS file cache is warm for both
        for _ in range(args.repeat):
            stamp_file(config).unlink(missing_ok=True)
            d_full.append(_timed(hook, env, tmp)[0])
            time.sleep(2.1)  # older than the hook's racy window, so that the next call may take the fast path
            _timed(hook, env, tmp)  # records the stamp
            d_fast.append(_timed(hook, env, tmp)[0])
        n_parts = len(list((tmp / "_parts").rglob("*.md")))

    # ------------------------------------------------------------------ report
    a, b, c = _med(a_wall), _med(b_wall), _med(c_wall)
    print("Wall time (fresh process each, imports included; medians)")
    print(f"  (a) seed analysis, plain nilearn ....... {_fmt(a_wall)}")
    print(f"  (b) this project, cold (force=True) .... {_fmt(b_wall)}   [run() alone {_med(b_run):.2f} s]")
    print(f"  (c) this project, warm (cache hit) ..... {_fmt(c_wall)}")
    if d_full:
        print(f"  (d) pre-render hook, full path: title page and {n_parts} chapter parts from the cached results "
              f"{_fmt(d_full)}")
        print(f"      pre-render hook, fast path (nothing changed) .................................. {_fmt(d_fast)}")
    print("\nRatios (target: b/a <= 1.5, c and d < 5 s)")
    ratios = f"  b/a = {b / a:.2f}   c/a = {c / a:.2f}"
    print(ratios)
    print("\nPeak memory of (b) (target < 2 GB)")
    print(f"  largest single process (ru_maxrss, RUSAGE_CHILDREN) .............................. "
          f"{b_maxrss / 1024:7.0f} MB")
    print(f"  whole process tree (main + figure workers), summed PSS, sampled every 50 ms .... "
          f"{max(b_peak_tree) / 1024:7.0f} MB")
    print("\n(a) steps, median s")
    for k in a_steps[0]:
        print(f"  {k:<40s} {_med([s[k] for s in a_steps]):6.2f}")
    print("\n(b) steps (from the 'analysis' logger), median s")
    names = [s for s, _ in b_steps[0]]
    for j, name in enumerate(names):
        vals = [run[j][1] for run in b_steps if len(run) > j and run[j][0] == name]
        print(f"  {name[:60]:<60s} {_med(vals):6.2f}")
    if args.profile:
        import pstats

        _clean_outputs(out, Path(bold))
        prof = tmp / "cold.prof"
        _timed([py, "-c", COLD, str(config), str(tmp / "steps-prof.json"), "1", str(prof)], env, project)
        print("\ncProfile of one cold run (main process), top 25 by cumulative time")
        pstats.Stats(str(prof)).sort_stats("cumulative").print_stats(25)

    if args.keep:
        print(f"\nkept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
