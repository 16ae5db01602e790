"""Command line: ``python -m analysis [--config analysis.toml] [--force]``.

Runs the analysis with progress on the console and exits non-zero with a one-line
message on bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.splitlines()[0])
    parser.add_argument("--config", "-c", default=None, help="TOML config (default: analysis.toml)")
    parser.add_argument("--dataset", choices=["spm_auditory", "simulated", "bids", "statmap"],
                        help="override data.dataset")
    parser.add_argument("--force", action="store_true", help="recompute even if cached results are valid")
    parser.add_argument("--check", action="store_true",
                        help="validate the config, report metadata, inputs, events and contrasts; fit nothing")
    parser.add_argument("--prerender", action="store_true",
                        help="Quarto pre-render hook: run (cached), write _report-metadata.yml, keep _freeze/ in step")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress messages")
    parser.add_argument("--verbose", "-v", action="store_true", help="also show the libraries' own warnings")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"analysis {__version__}")
    args = parser.parse_args(argv)
    if args.prerender and not args.force:
        summary = _unchanged_since_last_prerender(args)
        if summary is not None:
            print(summary)
            return 0

    from .pipeline import main_logging

    if not args.quiet:
        main_logging()
    _library_warnings(verbose=args.verbose)
    try:
        from .metadata import from_toml

        meta = from_toml(args.config)  # the [report] table too, before anything is computed or replaced
        config = load_config(args.config)
        if args.dataset:
            config = config.replace(data={"dataset": args.dataset})
        if args.check:
            from .pipeline import check

            print(f"ok: {check(config)}")
            return 0
        from .pipeline import run

        results = run(config, force=args.force)
        if args.prerender:  # Quarto pre-render: title page (from [report]) that says which data were used
            from .metadata import write_quarto_metadata
            from .report import subtitle

            write_quarto_metadata(meta, simulated=results.dataset.is_simulated, subtitle=subtitle(results))
            from pathlib import Path

            from .freeze import sync_freeze
            from .pipeline import cache_dir

            sync_freeze(results.cache_key, Path.cwd(), cache_dir(config))
    except (ConfigError, ValueError, OSError) as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    c = results.contrast()
    p = c.primary
    summary = (f"{results.dataset.dataset}{' (SIMULATED FALLBACK)' if results.dataset.fallback_reason else ''}: "
               f"contrast {c.name}: {p.label}: {p.n_pos} positive / {p.n_neg} negative voxels, "
               f"{len(c.peaks())} clusters; results in {results.path('results/results.json')}")
    print(summary)
    if args.prerender:
        _record_prerender(args, config, results, summary)
    return 0


def _prerender_args(args) -> list:
    return [args.config, args.dataset]


def _unchanged_since_last_prerender(args) -> str | None:
    """The pre-render hook's fast path (``analysis.freeze.prerender_is_current``): imports nothing heavy."""
    from pathlib import Path

    from .config import config_path
    from .freeze import prerender_is_current, share_frozen_results

    try:
        summary = prerender_is_current(_prerender_args(args), config_path(args.config))
        if summary is not None:
            share_frozen_results(Path.cwd())  # the links are re-made at every render (a moved project)
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
    from .config import config_path
    from .data import nilearn_data_dir
    from .freeze import FINGERPRINT_FILE, record_prerender
    from .metadata import METADATA_FILE
    from .pipeline import cache_dir

    out = Path(config.output.dir).resolve()
    # (not the output folder itself: every run probes it for writing, and the title page is written into it)
    watched = [out / outputs.MANIFEST, *(out / rel for rel in (outputs.read_manifest(out) or {}))]
    watched += [Path(entry["path"]) for entry in results.dataset.files.values()]
    if config.data.dataset == "spm_auditory":  # the real data appearing replaces a simulated fallback
        watched.append(Path(nilearn_data_dir(config) or Path.home() / "nilearn_data") / "spm_auditory" / "MoAEpilot"
                       / "sub-01")
    written = [METADATA_FILE.resolve(), cache_dir(config) / FINGERPRINT_FILE]
    record_prerender(_prerender_args(args), config_path(args.config), watched, written, summary)


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
