"""How the project scales to today's run sizes, against plain nilearn on the same file.

For each size a BIDS dataset with an fMRIPrep-like derivative is generated once (``space-MNI152NLin2009cAsym_desc-
preproc_bold.nii.gz``, gzip-compressed float32, its ``desc-brain_mask`` and a ``task-listen_bold.json`` sidecar with
the TR; a listening block design; AR(1) noise, a planted auditory response and a PCC deactivation), then two commands
are run alternately in fresh processes (A B A B ...):

(project) ``analysis.run(config, force=True)``: the whole report's analysis in BIDS mode with ``bids.space`` set (no
    preprocessing), everything else default: GLM, five thresholds, labelled cluster tables, DMN (ROI GLMs and the
    seed map), calibration with 6 + 2 null designs, 16 figures and the viewer; empty output folder each time;
(plain) the seed's analysis in plain nilearn on the same file: ``nib.load`` + ``get_fdata(float32)``,
    ``FirstLevelModel(t_r, noise_model="ar1", hrf_model="spm", drift_model="cosine", high_pass=0.01).fit(img,
    events)`` (nilearn computes its own mask, as the seed does), the z map, ``threshold_stats_img`` FDR 0.05 and
    ``get_clusters_table``; no figures.

Printed for each size: wall time (median, min-max), peak memory of the whole process tree (summed PSS of the process
and its figure workers, sampled every 50 ms), the project/plain ratio of wall times (median of the pairwise ratios),
peak memory over the run's float32 size, and time per voxel-volume (wall / (x*y*z*t)).

    python bench/bench_scale.py --sizes 3mm84 --repeat 3              # quick: about 1 minute
    python bench/bench_scale.py --sizes 2mm300,2mm600 --repeat 2      # about 10 minutes on 2 cores
    python bench/bench_scale.py --sizes 2mm1000 --repeat 1 --only project
    python bench/bench_scale.py --project /path/to/other/checkout     # time another version of the project

Sizes: 3mm84 (67x79x64x84, TR 7 s), 2mm300 (91x109x91x300, TR 2 s), 2mm600 (91x109x91x600, TR 0.8 s), 2mm1000
(91x109x91x1000, TR 0.8 s). Generated data are kept in ``--data`` (default: a folder in the temporary directory) and
reused. Atlases come from ``NILEARN_DATA`` (default ``../shared/nilearn_data`` next to the project, if present).
Prints its figures; it is not a test.
"""

from __future__ import annotations

import argparse
import gzip
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

import numpy as np

from bench_report import _rss_kb, _tree  # PSS of a process, and its tree (one copy for both benchmarks)

ROOT = Path(__file__).resolve().parents[1]
SPACE = "MNI152NLin2009cAsym"
SIZES = {  # name: (shape, n_scans, t_r, voxel size mm, affine origin)
    "3mm84": ((67, 79, 64), 84, 7.0, 3.0, (-100.0, -136.0, -80.0)),
    "2mm300": ((91, 109, 91), 300, 2.0, 2.0, (-90.0, -126.0, -72.0)),
    "2mm600": ((91, 109, 91), 600, 0.8, 2.0, (-90.0, -126.0, -72.0)),
    "2mm1000": ((91, 109, 91), 1000, 0.8, 2.0, (-90.0, -126.0, -72.0)),
}

PLAIN = r'''
import sys, warnings
warnings.filterwarnings("ignore")
import nibabel as nib
import pandas as pd
from nilearn.glm import threshold_stats_img
from nilearn.glm.first_level import FirstLevelModel
from nilearn.reporting import get_clusters_table
bold_path, events_path, t_r = sys.argv[1], sys.argv[2], float(sys.argv[3])
print("BENCH-MARK reading the run", file=sys.stderr, flush=True)  # the bench samples the baseline here
img = nib.load(bold_path)
img = nib.Nifti1Image(img.get_fdata(dtype="float32"), img.affine, img.header)
events = pd.read_csv(events_path, sep="\t")
model = FirstLevelModel(t_r=t_r, noise_model="ar1", hrf_model="spm", drift_model="cosine", high_pass=0.01)
model = model.fit(img, events)
z_map = model.compute_contrast("listening", output_type="z_score")
thr_img, thr = threshold_stats_img(z_map, alpha=0.05, height_control="fdr")
table = get_clusters_table(z_map, stat_threshold=thr, cluster_threshold=10)
print(len(table))
'''

PROJECT = r'''
import sys
import analysis.data
from analysis import load_config, run
read_bold = analysis.data.read_bold
def marked_read_bold(*args, **kwargs):  # the bench samples the baseline when the run starts being read
    print("BENCH-MARK reading the run", file=sys.stderr, flush=True)
    return read_bold(*args, **kwargs)
analysis.data.read_bold = marked_read_bold
run(load_config(sys.argv[1]), force=True)
'''

MARK = "BENCH-MARK reading the run"
BURN = "while True: pass"


# ----------------------------------------------------------------------------- data

def _affine(vox: float, origin) -> np.ndarray:
    aff = np.diag([vox, vox, vox, 1.0])
    aff[:3, 3] = origin
    return aff


def generate(name: str, folder: Path) -> dict:
    """Write the BIDS dataset of size ``name`` into ``folder`` (once); return its paths and facts."""
    shape, n, t_r, vox, origin = SIZES[name]
    root = folder / name
    func = root / "sub-01" / "func"
    deriv = root / "derivatives" / "fmriprep" / "sub-01" / "func"
    stem = f"sub-01_task-listen_space-{SPACE}"
    bold = deriv / f"{stem}_desc-preproc_bold.nii.gz"
    events_path = func / "sub-01_task-listen_events.tsv"
    info = {"root": str(root), "bold": str(bold), "events": str(events_path), "t_r": t_r, "shape": [*shape, n],
            "float32_bytes": int(np.prod(shape)) * n * 4}
    done = root / "complete.json"
    if done.exists():
        return json.loads(done.read_text())
    import nibabel as nib
    import pandas as pd
    from nilearn.datasets import load_mni152_brain_mask
    from nilearn.glm.first_level import make_first_level_design_matrix
    from nilearn.image import resample_img
    from scipy import ndimage

    shutil.rmtree(root, ignore_errors=True)
    func.mkdir(parents=True)
    deriv.mkdir(parents=True)
    affine = _affine(vox, origin)
    mask = np.asarray(resample_img(load_mni152_brain_mask(resolution=2), target_affine=affine, target_shape=shape,
                                   interpolation="nearest", force_resample=True, copy_header=True).dataobj) > 0
    (root / "dataset_description.json").write_text(json.dumps({"Name": f"bench {name}", "BIDSVersion": "1.8.0"}))
    (root / "task-listen_bold.json").write_text(json.dumps({"RepetitionTime": t_r, "TaskName": "listen"}))
    (root / "derivatives" / "fmriprep" / "dataset_description.json").write_text(
        json.dumps({"Name": "fMRIPrep-like", "BIDSVersion": "1.8.0", "DatasetType": "derivative",
                    "GeneratedBy": [{"Name": "bench_scale"}]}))
    block = 42.0 if t_r >= 2 else 20.0  # s on, s off
    onsets = np.arange(block, n * t_r - block, 2 * block)
    events = pd.DataFrame({"onset": onsets, "duration": block, "trial_type": "listening"})
    events.to_csv(events_path, sep="\t", index=False)
    frame_times = np.arange(n) * t_r
    task = make_first_level_design_matrix(frame_times, events, hrf_model="spm", drift_model=None)["listening"]
    task = task.to_numpy() / task.max()
    rng = np.random.default_rng(0)
    ijk = np.indices(shape).reshape(3, -1).T
    xyz = (ijk @ affine[:3, :3].T + affine[:3, 3]).reshape(*shape, 3)

    def ball(c, r):
        return np.sum((xyz - np.asarray(c)) ** 2, axis=-1) <= r * r

    base = np.where(mask, 1000.0 * (1.0 + 0.2 * np.tanh(ndimage.gaussian_filter(
        rng.standard_normal(shape), 4.0) * 8.0)), 30.0).astype(np.float32)
    effect = np.zeros(shape, np.float32)
    effect[ball((-54, -22, 8), 12) & mask] = 0.02
    effect[ball((56, -20, 6), 12) & mask] = 0.02
    effect[ball((0, -53, 26), 12) & mask] = -0.008
    sd = (base / 60.0).astype(np.float32)  # tSNR 60
    rho = 0.3 if t_r >= 2 else 0.5
    state = rng.standard_normal(shape, dtype=np.float32)
    innov = np.float32(np.sqrt(1 - rho * rho))
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((*shape, n))
    hdr.set_data_dtype(np.float32)
    hdr.set_zooms((vox, vox, vox, t_r))
    hdr.set_xyzt_units("mm", "sec")
    hdr.set_qform(affine, code=4)
    hdr.set_sform(affine, code=4)
    hdr.set_data_offset(352)
    tmp = bold.with_suffix(".tmp")
    with gzip.open(tmp, "wb", compresslevel=1) as fh:
        fh.write(hdr.binaryblock + b"\x00" * 4)
        for t in range(n):
            state = rho * state + innov * rng.standard_normal(shape, dtype=np.float32)
            vol = base * (1 + effect * np.float32(task[t])) + sd * state
            fh.write(np.asarray(vol, np.float32).tobytes(order="F"))
    os.replace(tmp, bold)
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), deriv / f"{stem}_desc-brain_mask.nii.gz")
    pd.DataFrame(rng.standard_normal((n, 6)) * 0.05, columns=["trans_x", "trans_y", "trans_z", "rot_x", "rot_y",
                                                              "rot_z"]).to_csv(
        deriv / "sub-01_task-listen_desc-confounds_timeseries.tsv", sep="\t", index=False)
    info["n_mask_voxels"] = int(mask.sum())
    done.write_text(json.dumps(info))
    return info


def project_config(info: dict, out: Path, project: Path) -> Path:
    toml = (project / "analysis.toml").read_text()
    lines = []
    for line in toml.splitlines():
        key = line.split("#")[0].strip()
        if key.startswith("dataset ="):
            line = 'dataset = "bids"'
        elif key.startswith("t_r ="):
            line = "t_r = 0.0"
        elif key.startswith("dir ="):
            line = f'dir = "{out}"'
        lines.append(line)
    lines += ["", "[bids]", f'root = "{info["root"]}"', 'subject = "01"', 'task = "listen"', f'space = "{SPACE}"']
    cfg = out.parent / f"{out.name}.toml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


# ----------------------------------------------------------------------------- timing

def timed(cmd: list[str], env: dict, cwd: Path) -> tuple[float, int, int]:
    """Wall time (s), peak summed PSS (bytes) of the process tree of ``cmd``, and its PSS when the command
    printed :data:`MARK` (after its imports, before it reads the run: the baseline; 0 if it never did)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = baseline = 0
    err_lines: list[str] = []

    def tree_pss() -> int:
        return sum(_rss_kb(p) for p in _tree(proc.pid))

    def sample():
        nonlocal peak
        while proc.poll() is None:
            peak = max(peak, tree_pss())
            time.sleep(0.05)

    def read_err():
        nonlocal baseline
        for line in proc.stderr:
            if MARK in line and not baseline:
                baseline = tree_pss()
            err_lines.append(line)

    threads = [threading.Thread(target=sample, daemon=True), threading.Thread(target=read_err, daemon=True)]
    for th in threads:
        th.start()
    proc.stdout.read()
    proc.wait()
    wall = time.perf_counter() - t0
    for th in threads:
        th.join()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed:\n{''.join(err_lines)[-3000:]}")
    return wall, peak * 1024, baseline * 1024


class Busy:
    """``n`` processes spinning at normal priority for the duration of the block: a busy machine."""

    def __init__(self, n: int):
        self.n, self.procs = n, []

    def __enter__(self):
        self.procs = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(self.n)]
        if self.n:
            time.sleep(2)  # let the load average see them
        return self

    def __exit__(self, *exc):
        for proc in self.procs:
            proc.kill()
            proc.wait()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="3mm84,2mm300,2mm600,2mm1000",
                   help=f"comma-separated, from {', '.join(SIZES)}")
    p.add_argument("--repeat", type=int, default=3, help="runs of each command per size (medians are reported)")
    p.add_argument("--only", choices=["project", "plain"], help="run only one of the two commands")
    p.add_argument("--busy", type=int, default=0, metavar="N",
                   help="a busy machine: N processes spinning at normal priority while both commands run "
                        "(default 0: the machine as it is)")
    p.add_argument("--project", type=Path, default=ROOT, help="project checkout to time (default: this one)")
    p.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "bench-scale-data",
                   help="where the generated datasets are kept and reused")
    args = p.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        p.error(f"unknown size(s) {', '.join(unknown)}; choose from {', '.join(SIZES)}")
    if args.busy < 0:
        p.error("--busy must be 0 or more")
    project = args.project.resolve()
    if "NILEARN_DATA" not in os.environ and (ROOT.parent / "shared" / "nilearn_data").is_dir():
        os.environ["NILEARN_DATA"] = str(ROOT.parent / "shared" / "nilearn_data")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(project), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("PYTHONHASHSEED", "0")
    py = sys.executable
    print(f"project {project}\ncores {os.cpu_count()}; load average {os.getloadavg()[0]:.1f} at start; "
          f"NILEARN_DATA {os.environ.get('NILEARN_DATA', '(unset)')}; "
          f"{f'busy: {args.busy} spinning processes' if args.busy else 'not made busy'}\n")
    args.data.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    rows = []
    try:
        for name in sizes:
            t = time.perf_counter()
            info = generate(name, args.data)
            print(f"{name}: data ready in {time.perf_counter() - t:.0f} s ({info['bold']}, "
                  f"{info['float32_bytes'] / 1e9:.2f} GB as float32)", flush=True)
            out = work / f"out-{name}"
            cfg = project_config(info, out, project)
            cmds = {"project": [py, "-c", PROJECT, str(cfg)],
                    "plain": [py, "-c", PLAIN, info["bold"], info["events"], str(info["t_r"])]}
            order = [args.only] if args.only else ["project", "plain"]
            res = {k: [] for k in order}
            with Busy(args.busy):
                for i in range(args.repeat):
                    for k in order:
                        if k == "project":
                            shutil.rmtree(out, ignore_errors=True)
                        wall, peak, base = timed(cmds[k], env, project)
                        res[k].append((wall, peak, base))
                        print(f"  run {i + 1} {k:<8s} {wall:7.1f} s  peak {peak / 1e9:5.2f} GB  "
                              f"(at the start of the read {base / 1e9:5.2f} GB; load {os.getloadavg()[0]:.1f})",
                              flush=True)
            rows.append((name, info, res))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    mode = f"busy ({args.busy} spinning processes)" if args.busy else "as the machine is"
    print(f"\n{mode}; peak: the whole tree's PSS; baseline: the tree's PSS when the command starts reading the "
          "run (after its imports; for the project, its figure workers started); data: peak - baseline\n")
    print("| run | command | wall s (min-max) | peak RSS tree GB | / float32 size | baseline GB | data GB "
          "| data / float32 size | ns per voxel-volume | project/plain |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, info, res in rows:
        nvv = int(np.prod(info["shape"]))
        f32 = info["float32_bytes"]
        ratio = ""
        if "project" in res and "plain" in res:
            pairs = [a[0] / b[0] for a, b in zip(res["project"], res["plain"])]
            ratio = f"{statistics.median(pairs):.2f} ({min(pairs):.2f}-{max(pairs):.2f})"
        for k, vals in res.items():
            walls = [v[0] for v in vals]
            peak = max(v[1] for v in vals)
            base = statistics.median(v[2] for v in vals)
            data_b = max(v[1] - v[2] for v in vals)
            med = statistics.median(walls)
            print(f"| {name} | {k} | {med:.1f} ({min(walls):.1f}-{max(walls):.1f}) | {peak / 1e9:.2f} | "
                  f"{peak / f32:.2f} | {base / 1e9:.2f} | {data_b / 1e9:.2f} | {data_b / f32:.2f} | "
                  f"{med / nvv * 1e9:.1f} | {ratio if k == 'project' else ''} |")
    print()
    for name, info, res in rows:
        limit = 2 * info["float32_bytes"]
        if "plain" in res:
            plain_peak = max(v[1] for v in res["plain"])
            plain_base = statistics.median(v[2] for v in res["plain"])
            if plain_base >= limit:
                verdict = ("not reachable by any process with nilearn imported: plain nilearn's baseline alone "
                           "is above it")
            elif plain_peak > limit:
                verdict = "missed by plain nilearn itself"
            else:
                verdict = "met by plain nilearn"
            print(f"{name}: 2x float32 = {limit / 1e9:.2f} GB; plain nilearn peaks at {plain_peak / 1e9:.2f} GB "
                  f"({plain_peak / limit * 2:.2f}x float32), {plain_base / 1e9:.2f} GB of it before reading the "
                  f"run: the absolute criterion (peak <= 2x float32) is {verdict}")
        else:
            print(f"{name}: 2x float32 = {limit / 1e9:.2f} GB (run the plain command to judge the absolute "
                  "criterion)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
