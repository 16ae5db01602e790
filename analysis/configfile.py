"""Which config file a command reads, and which datasets a config may name: the standard library only.

The command line and the pre-render hook's fast path import this, not :mod:`analysis.config` (which builds the
pydantic models: a third of a second, paid only when a config is validated).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_CONFIG_PATH", "DEFAULT_OUTPUT_DIR", "DEFAULT_CACHE_DIR", "DATASETS", "config_path", "read_toml"]

DEFAULT_CONFIG_PATH = Path("analysis.toml")
DATASETS = ("spm_auditory", "simulated", "bids", "statmap")  # data.dataset (analysis.config.Dataset)
DEFAULT_OUTPUT_DIR = "."  # output.dir
DEFAULT_CACHE_DIR = ".cache"  # output.cache_dir, relative to output.dir


def config_path(path: str | Path | None = None) -> Path | None:
    """The config file to read: ``path``, else ``$ANALYSIS_CONFIG``, else ``analysis.toml`` if it exists."""
    if path is None and os.environ.get("ANALYSIS_CONFIG"):
        path = os.environ["ANALYSIS_CONFIG"]
    if path is None:
        return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None
    return Path(path)


def read_toml(path: Path, error: type[Exception] = ValueError) -> dict[str, Any]:
    """Parse a TOML file; a missing file or bad syntax raises ``error`` with a one-line message."""
    if not path.exists():
        raise error(f"{path}: config file not found; pass an existing TOML file or omit it for the defaults")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid TOML ({exc}); fix the syntax") from None
