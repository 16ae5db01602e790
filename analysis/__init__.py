"""First-level fMRI GLM analysis behind the Quarto report.

Public API::

    from analysis import load_config, run, load_results
"""

__version__ = "0.1.0"

from .config import Config, ConfigError, load_config  # noqa: E402
from .pipeline import load_results, run  # noqa: E402

__all__ = ["Config", "ConfigError", "load_config", "run", "load_results", "__version__"]
