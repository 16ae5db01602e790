"""Command line: ``fmri-report <command>`` (also ``python -m analysis``).

Commands::

    fmri-report run [--config F] [--force] [--dataset D] [--verbose]   compute (or read the cached results)
    fmri-report check [--config F]                                     validate config, [report], inputs; fit nothing
    fmri-report redraw [--config F]                                    redraw the figures from the saved results
    fmri-report render [--config F] [quarto args...]                   run, then render what changed (analysis.render)
    fmri-report study [--config F] [--scheduler A] [--strict]          a whole study: every subject, then the group

Without a command the flags of earlier versions work as they did: ``python -m analysis [--config F] [--force]
[--dataset D] [--check] [--prerender] [-q] [-v]`` (``--check`` is ``check``, otherwise ``run``; ``--prerender`` is
Quarto's pre-render hook). Bad input exits with status 2 and a one-line message, before any computation.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

from .configfile import DATASETS

COMMANDS = ("run", "check", "redraw", "render", "study")
STUDY_DATASETS = ("simulated-study",)  # --dataset values that run a whole study (analysis.study)
HOOK_ARGS = argparse.Namespace(config=None, dataset=None)  # the arguments Quarto's pre-render hook is run with
QUARTO_MISSING = ("quarto not found on PATH; install Quarto >= 1.5 (https://quarto.org/docs/get-started/) "
                  "or add the folder holding the quarto command to PATH")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser: the commands, and the flags of ``python -m analysis`` without a command."""
    from . import __version__

    if prog is None:
        prog = "python -m analysis" if sys.argv and sys.argv[0].endswith("__main__.py") else "fmri-report"
    parser = argparse.ArgumentParser(
        prog=prog, description="First-level fMRI analysis behind the Quarto report.",
        epilog=f"Without a command: run (or check, with --check). '{prog} <command> --help' shows a command's flags.")
    parser.add_argument("--version", action="version", version=f"analysis {__version__}")
    # the flags of earlier versions (no command); every command's flags use the same names
    parser.add_argument("--config", "-c", default=None, help="TOML config (default: $ANALYSIS_CONFIG or analysis.toml)")
    parser.add_argument("--dataset", choices=DATASETS + STUDY_DATASETS,
                        help="override data.dataset (simulated-study: the offline demo of a whole study)")
    parser.add_argument("--force", action="store_true", help="recompute even if cached results are valid")
    parser.add_argument("--check", action="store_true", help="validate only, fit nothing (the check command)")
    parser.add_argument("--prerender", action="store_true",
                        help="Quarto pre-render hook: run (cached), write _report-metadata.yml and the chapters' _parts/")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress messages")
    parser.add_argument("--verbose", "-v", action="store_true", help="also show the libraries' own warnings")

    commands = parser.add_subparsers(dest="command", title="commands", metavar="{" + ",".join(COMMANDS) + "}")
    # (defaults are SUPPRESS: a flag given before the command keeps its value)
    config = dict(default=argparse.SUPPRESS, help="TOML config (default: $ANALYSIS_CONFIG or analysis.toml)")
    quiet = dict(action="store_true", default=argparse.SUPPRESS, help="no progress messages")
    verbose = dict(action="store_true", default=argparse.SUPPRESS, help="also show the libraries' own warnings")
    run = commands.add_parser("run", help="compute the analysis (or read the cached results)",
                              description="Compute the analysis, or read the cached results when they are valid.")
    check = commands.add_parser("check", help="validate the config, [report], inputs, events and contrasts",
                                description="Validate the config, the [report] table, the inputs, the events and "
                                            "the contrasts against the design; fit nothing, write nothing.")
    redraw = commands.add_parser("redraw", help="redraw the figures from the saved results",
                                 description="Redraw the figures from the saved derivatives, without refitting.")
    render = commands.add_parser("render", allow_abbrev=False, help="run, then quarto render (extra args go to quarto)",
                                 description="Run the analysis, then 'quarto render' with every other argument "
                                             "passed through (e.g. --to html, --profile statmap).")
    study = commands.add_parser("study", help="a whole study: every subject on Dask, then the group level",
                                description="Every subject's runs (one Dask task per subject), fixed effects "
                                            "across runs, then the group level ([study] in the config).")
    study.add_argument("--scheduler", default=argparse.SUPPRESS,
                       help="address of a running Dask scheduler (default: study.scheduler, else a LocalCluster)")
    study.add_argument("--strict", action="store_true", default=argparse.SUPPRESS,
                       help="a subject with bad input is an error (exit 2) instead of being left out")
    study.add_argument("--n-workers", type=int, default=argparse.SUPPRESS, dest="n_workers",
                       help="workers of the LocalCluster (default: study.n_workers, 0 = one per core)")
    study.add_argument("--dataset", choices=("bids",) + STUDY_DATASETS, default=argparse.SUPPRESS,
                       help="bids (the config's [bids] dataset) or simulated-study (the offline demo)")
    for sub in (run, check, redraw, render, study):
        sub.add_argument("--config", "-c", **config)
    for sub in (run, check):
        sub.add_argument("--dataset", choices=DATASETS, default=argparse.SUPPRESS, help="override data.dataset")
    run.add_argument("--force", action="store_true", default=argparse.SUPPRESS,
                     help="recompute even if cached results are valid")
    for sub in (run, check, redraw, study):
        sub.add_argument("--quiet", "-q", **quiet)
        sub.add_argument("--verbose", "-v", **verbose)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.command and (args.check or args.prerender):
        parser.error(f"--check and --prerender are flags without a command; use '{parser.prog} check' or drop them")
    command = args.command or ("check" if args.check else "run")
    if args.dataset in STUDY_DATASETS and command in ("run", "study"):
        command = "study"  # python -m analysis --dataset simulated-study: the whole-study demo
    elif args.dataset in STUDY_DATASETS:
        parser.error(f"--dataset {args.dataset} is a whole study; use '{parser.prog} study --dataset {args.dataset}'")
    if extra and extra[0] == "--":
        extra = extra[1:]
    if extra and command != "render":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.prerender and not args.force:
        summary = _unchanged_since_last_prerender(args)
        if summary is not None:
            print(summary)
            return 0
    quarto = None
    if command == "render":
        import shutil

        quarto = shutil.which("quarto")
        if quarto is None:
            print(f"error: {QUARTO_MISSING}", file=sys.stderr)
            return 2
    # render in this package's book: do the pre-render hook's work here (its own run then takes the fast path),
    # so that analysis.render compares chapters and frozen results that are in step with the results
    if command == "render" and _profile_hook(extra):  # its own pre-render step computes what it shows
        return _render(quarto, args.config, extra)
    book = command == "render" and not args.dataset and _book_project()
    if book and not args.force:
        with _hook_env(args.config):
            summary = _unchanged_since_last_prerender(HOOK_ARGS)
        if summary is not None:
            print(summary)
            return _render(quarto, args.config, extra)

    from .config import ConfigError, read_config_file, validate_config
    from .pipeline import main_logging

    if not args.quiet:
        main_logging()
    _library_warnings(verbose=args.verbose)
    try:
        from .metadata import validate_report

        data, source = read_config_file(args.config)  # parsed once: the analysis sections and [report]
        meta = validate_report(data, source)  # the [report] table too, before anything is computed or replaced
        config = validate_config(data, source)
        if command == "study":
            return _study(config, args)
        if args.dataset:
            config = config.replace(data={"dataset": args.dataset})
        if command == "check":
            from .pipeline import check

            print(f"ok: {check(config)}")
            return 0
        if command == "redraw":
            return _redraw(config)
        from .pipeline import run

        results = run(config, force=args.force)
        if args.prerender or book:  # Quarto pre-render: title page (from [report]) that says which data were used
            from .metadata import write_quarto_metadata
            from .report import subtitle

            write_quarto_metadata(meta, simulated=results.dataset.is_simulated, subtitle=subtitle(results))
            from .pages import write_parts
            from .provenance import write_provenance

            write_parts(results, Path.cwd())  # what the chapters include and cite (they execute no code)
            write_provenance(Path.cwd())
    except (ConfigError, ValueError, OSError) as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    summary = _summary(results)
    print(summary)
    if args.prerender:
        _record_prerender(args, config, results, summary)
    elif book:
        with _hook_env(args.config):
            _record_prerender(HOOK_ARGS, config, results, summary)
    if command == "render":
        return _render(quarto, args.config, extra)
    return 0


def _summary(results) -> str:
    c = results.contrast()
    p = c.primary
    return (f"{results.dataset.dataset}{' (SIMULATED FALLBACK)' if results.dataset.fallback_reason else ''}: "
            f"contrast {c.name}: {p.label}: {p.n_pos} positive / {p.n_neg} negative voxels, "
            f"{len(c.peaks())} clusters; results in {results.path('results/results.json')}")


def _study(config, args) -> int:
    """``study``: :func:`analysis.study.run_study`; one progress line per subject, a summary at the end."""
    from . import study

    logging.getLogger("distributed").setLevel(logging.WARNING)  # the cluster's own chatter
    if args.dataset in STUDY_DATASETS:
        config = study.simulated_study_config(config)
    elif args.dataset:
        config = config.replace(data={"dataset": args.dataset})
    quiet = args.quiet
    res = study.run_study(config, scheduler=getattr(args, "scheduler", None), n_workers=getattr(args, "n_workers", None),
                          strict=True if getattr(args, "strict", False) else None,
                          progress=(lambda line: None) if quiet else (lambda line: print(line, flush=True)))
    c = res.contrast()
    fdr = c.threshold("fdr")
    left = f"; left out: {', '.join(f'sub-{k} ({v})' for k, v in res.excluded.items())}" if res.excluded else ""
    print(f"study: {res.n_subjects} of {len(res.subjects)} subjects in the group{left}; group contrast {c.name}: "
          f"FDR q < {fdr.spec.alpha:g}: {fdr.n_pos} positive / {fdr.n_neg} negative voxels; "
          f"results in {res.path(str(study.STUDY_RESULTS))}")
    return 0


def _redraw(config) -> int:
    """``redraw``: :func:`analysis.pipeline.redraw` (every figure from the saved results, no refit)."""
    from . import pipeline

    paths = pipeline.redraw(config)
    print(f"redrew {len(paths)} figures from the saved results in {paths[0].parent if paths else 'figures/'}")
    return 0


def _render(quarto: str, config: str | None, extra: list[str]) -> int:
    """``render``: ``quarto render <extra>``, or only what changed since the last render (:mod:`analysis.render`);
    the chapters and the pre-render hook read the same config."""
    import os

    from .render import render_book

    env = dict(os.environ)
    if config is not None:
        env["ANALYSIS_CONFIG"] = str(Path(config).resolve())
    sys.stdout.flush()
    with _hook_env(config):
        return render_book(quarto, Path.cwd(), extra, env)


def _profile_hook(extra: list[str]) -> bool:
    """``render --profile P`` where the profile has its own pre-render step (the study report): Quarto runs that
    step, and this command runs no single-run analysis before it."""
    from .render import hook_of_render

    try:
        return hook_of_render(Path.cwd(), extra) is not None
    except (OSError, ValueError):
        return False


def _book_project() -> bool:
    from .render import is_book_project

    return is_book_project(Path.cwd())


@contextlib.contextmanager
def _hook_env(config: str | None):
    """``$ANALYSIS_CONFIG`` as the pre-render hook and the chapters will see it under ``render --config F``
    (restored afterwards)."""
    import os

    if config is None:
        yield
        return
    old = os.environ.get("ANALYSIS_CONFIG")
    os.environ["ANALYSIS_CONFIG"] = str(Path(config).resolve())
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("ANALYSIS_CONFIG", None)
        else:
            os.environ["ANALYSIS_CONFIG"] = old


def _prerender_args(args) -> list:
    return [args.config, args.dataset]


def _unchanged_since_last_prerender(args) -> str | None:
    """The pre-render hook's fast path (``analysis.prerender.prerender_is_current``): imports nothing heavy."""
    from pathlib import Path

    from .configfile import config_path
    from .prerender import prerender_is_current
    from .provenance import write_provenance

    try:
        summary = prerender_is_current(_prerender_args(args), config_path(args.config))
        if summary is not None:
            write_provenance(Path.cwd())  # the commit and the day are the rendering's, not the results'
        return summary
    except Exception:  # noqa: BLE001 - any doubt: take the full path, which reports errors properly
        return None


def _record_prerender(args, config, results, summary: str) -> None:
    """What this pre-render read and wrote, for the next one's fast path (never fails the render)."""
    try:
        _save_prerender_stamp(args, config, results, summary)
    except Exception:  # noqa: BLE001 - without a stamp the next pre-render takes the full path
        pass


def _save_prerender_stamp(args, config, results, summary: str) -> None:
    from pathlib import Path

    from . import outputs
    from .configfile import config_path
    from .data import nilearn_data_dir
    from .prerender import record_prerender
    from .metadata import METADATA_FILE

    out = Path(config.output.dir).resolve()
    # (not the output folder itself: every run probes it for writing, and the title page is written into it)
    watched = [out / outputs.MANIFEST, *(out / rel for rel in (outputs.read_manifest(out) or {}))]
    watched += [Path(entry.path) for entry in results.dataset.files.values()]
    if config.data.dataset == "spm_auditory":  # the real data appearing replaces a simulated fallback
        watched.append(Path(nilearn_data_dir(config) or Path.home() / "nilearn_data") / "spm_auditory" / "MoAEpilot"
                       / "sub-01")
    written = [METADATA_FILE.resolve(), *_written_parts(results)]
    record_prerender(_prerender_args(args), config_path(args.config), watched, written, summary)


def _written_parts(results) -> list:
    from pathlib import Path

    from .pages import PARTS_DIR, VALUES_FILE, chapter_names

    return [Path.cwd() / VALUES_FILE, *sorted(p for name in chapter_names(results)
                                            for p in (Path.cwd() / PARTS_DIR / name).glob("*.md"))]


def _library_warnings(verbose: bool) -> None:
    """Library warnings go to the log: shown with ``--verbose``, otherwise kept out of the progress lines.

    What matters to the reader (excluded voxels, a skipped step, simulated data) the package logs in its own
    words; nilearn's and numpy's warnings are details of how it got there. The figure workers follow the same
    rule: forked ones inherit this set-up, and ``PYTHONWARNINGS=ignore`` keeps a spawned one (a clean
    interpreter) quiet too.
    """
    import os
    import warnings

    logging.captureWarnings(True)
    wlog = logging.getLogger("py.warnings")
    wlog.propagate = False
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[warning] %(message)s"))
        wlog.addHandler(handler)
        wlog.setLevel(logging.WARNING)
        warnings.simplefilter("default")
    else:
        wlog.addHandler(logging.NullHandler())
        os.environ["PYTHONWARNINGS"] = "ignore"  # read by every Python process started from here


if __name__ == "__main__":
    sys.exit(main())
