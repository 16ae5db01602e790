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
    parser.add_argument("--dataset", choices=["spm_auditory", "simulated"], help="override data.dataset")
    parser.add_argument("--force", action="store_true", help="recompute even if cached results are valid")
    parser.add_argument("--prerender", action="store_true",
                        help="Quarto pre-render hook: run (cached), write _report-metadata.yml, keep _freeze/ in step")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress messages")
    args = parser.parse_args(argv)

    from .pipeline import main_logging, run

    if not args.quiet:
        main_logging()
    logging.captureWarnings(False)
    try:
        config = load_config(args.config)
        if args.dataset:
            config = config.replace(data={"dataset": args.dataset})
        results = run(config, force=args.force)
        if args.prerender:  # Quarto pre-render: title page (from [report]) that says which data were used
            from .metadata import from_toml, write_quarto_metadata
            from .report import subtitle

            write_quarto_metadata(from_toml(args.config), simulated=results.dataset.is_simulated,
                                  subtitle=subtitle(results))
            from pathlib import Path

            from .freeze import sync_freeze
            from .pipeline import _cache_dir

            sync_freeze(results.cache_key, Path.cwd(), _cache_dir(config))
    except (ConfigError, ValueError, OSError) as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    c = results.contrast()
    p = c.primary
    print(f"{results.dataset.dataset}{' (SIMULATED FALLBACK)' if results.dataset.fallback_reason else ''}: "
          f"contrast {c.name}: {p.label}: {p.n_pos} positive / {p.n_neg} negative voxels, "
          f"{len(c.peaks())} clusters; results in {results.path('results/results.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
