"""First-level fMRI GLM analysis behind the Quarto report.

Public API::

    from analysis import load_config, run, load_results
"""

__version__ = "0.1.0"

from .config import Config, ConfigError, load_config  # noqa: E402

__all__ = ["Config", "ConfigError", "load_config", "run", "load_results", "__version__"]


def __getattr__(name):
    # run and load_results live in .pipeline, imported on first use: a chapter that only reads the
    # cached results never imports the fitting code (nilearn.glm, scikit-learn)
    if name in ("run", "load_results"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
