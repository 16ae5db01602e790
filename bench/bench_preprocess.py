"""Time and peak memory of :func:`analysis.preprocess.preprocess` on an SPM-auditory-sized run.

The native-space test run (64 x 64 x 64 voxels of 3 mm, 84 volumes, a 2 mm T1
stand-in) is simulated in a child process and written to a temporary folder,
so the peak resident memory reported for this process is that of loading the
images and preprocessing them, not of the simulation.

Usage::

    python bench/bench_preprocess.py [--threads 2] [--normalisation Affine|SyN|Rigid]
                                     [--reference mean|first|middle] [--fwhm 6]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # native_sim: the test helper that builds the native run


def _simulate(out_dir: str, seed: int) -> None:
    import nibabel as nib

    from native_sim import simulate_native_run

    run = simulate_native_run(seed=seed)
    nib.save(run.bold_img, Path(out_dir) / "bold.nii.gz")
    nib.save(run.anat_img, Path(out_dir) / "anat.nii.gz")


def _max_rss_mb(who) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # kB on Linux


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--normalisation", default="Affine", choices=("Affine", "SyN", "Rigid"))
    parser.add_argument("--reference", default="mean", choices=("mean", "first", "middle"))
    parser.add_argument("--fwhm", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # ITK reads the thread count once, when ANTs first runs.
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as tmp:
        start = time.perf_counter()
        child = get_context("spawn").Process(target=_simulate, args=(tmp, args.seed))
        child.start()
        child.join()
        if child.exitcode != 0:
            print("simulation failed", file=sys.stderr)
            return 1
        simulate_seconds = time.perf_counter() - start

        import nibabel as nib

        from analysis.preprocess import PreprocessParams, ants_version, preprocess

        bold_img = nib.load(Path(tmp) / "bold.nii.gz")
        anat_img = nib.load(Path(tmp) / "anat.nii.gz")
        bold_img = nib.Nifti1Image(bold_img.get_fdata(dtype="float32"), bold_img.affine,
                                   bold_img.header)
        params = PreprocessParams(n_threads=args.threads, normalisation=args.normalisation,
                                  realign_reference=args.reference, smoothing_fwhm=args.fwhm)
        cpu0 = time.process_time()
        out = preprocess(bold_img, anat_img, params)
        cpu = time.process_time() - cpu0

    print(f"antspyx {ants_version()}, ITK threads {args.threads}, os.cpu_count() {os.cpu_count()}")
    print(f"input: bold {bold_img.shape} voxels {tuple(float(z) for z in bold_img.header.get_zooms()[:3])} mm, "
          f"anat {anat_img.shape}")
    print(f"params: reference={args.reference} normalisation={args.normalisation} "
          f"fwhm={args.fwhm:g} mm -> output {out.bold_img.shape}")
    print(f"simulation (child process, not counted): {simulate_seconds:.1f} s")
    for step, seconds in out.timings.items():
        print(f"  {step:<11s} {seconds:7.1f} s")
    print(f"preprocessing wall time: {out.timings['total']:.1f} s (CPU {cpu:.1f} s)")
    print(f"peak RSS: this process {_max_rss_mb(resource.RUSAGE_SELF):.0f} MB, "
          f"children {_max_rss_mb(resource.RUSAGE_CHILDREN):.0f} MB (simulation child included)")
    print(f"mean FD {out.qc['mean_fd']:.3f} mm, max FD {out.qc['max_fd']:.3f} mm, "
          f"{out.qc['n_above']} volumes > {out.qc['fd_threshold']:g} mm")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
