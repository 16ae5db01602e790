"""First-level fMRI GLM analysis behind the Quarto report.

Public API::

    from analysis import load_config, run, load_results
"""

__version__ = "0.3.0"  # 0.3: outputs carry a manifest; older caches recompute

__all__ = ["Config", "ConfigError", "load_config", "run", "load_results", "__version__"]

_SUBMODULES = ("pipeline", "data", "glm", "inference", "results", "noise", "calibration", "dmn", "atlas",
               "figures", "tables", "text", "report", "simulate", "metadata", "checklist", "statmap", "preprocess")


def __getattr__(name):
    # run and load_results live in .pipeline, imported on first use: a chapter that only reads the
    # cached results never imports the fitting code (nilearn.glm, scikit-learn)
    import importlib

    if name in ("run", "load_results"):
        return getattr(importlib.import_module(".pipeline", __name__), name)
    if name in ("Config", "ConfigError", "load_config"):  # the pydantic models are built on first use too
        return getattr(importlib.import_module(".config", __name__), name)
    if name in _SUBMODULES:  # ``import analysis; analysis.pipeline`` worked when __init__ imported it eagerly
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
