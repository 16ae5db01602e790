"""Draw figures in worker processes, while the analysis goes on or all at once at the end.

nilearn's plotting is slow (a glass brain is a few hundred milliseconds) and single-threaded, so the
figures of a run are drawn by a small pool of processes. Each job is a figure function of this
package, ``plot_*(..., out_file) -> Path``, with its arguments; the worker calls it exactly as the
main process would, with the same matplotlib settings (``_base`` sets them on import), so the files
are byte-identical to a serial run.

Two ways to use it::

    draw_all([(fmaps.plot_glass, (img, path), {}), ...], n_jobs=2)      # blocking, all at once

    with FigurePool(n_jobs=2) as pool:                                    # overlapped with computing
        pool.submit(fmaps.plot_glass, img, path)
        ...                                                               # go on computing
        paths = pool.results()                                            # wait; re-raise the first error

Arguments are pickled to the workers: pass what the figure needs (a 3D image, the first volumes
of a 4D run), not the whole 4D run. ``n_jobs=0`` (or a single job) draws in the calling process;
``ANALYSIS_FIGURE_JOBS=0`` in the environment does the same for every pool.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor

from typing import Any

__all__ = ["FigurePool", "draw_all", "default_n_jobs"]

Job = tuple[Callable[..., Any], tuple, dict]

_WARM_MODULES = ("analysis.figures.maps", "analysis.figures.calibration", "analysis.figures.dmn")


def default_n_jobs() -> int:
    """Drawing processes: ``ANALYSIS_FIGURE_JOBS`` if set (0 = draw in this process), else 2 (0 on one core)."""
    value = os.environ.get("ANALYSIS_FIGURE_JOBS", "")
    try:
        if value:
            return max(0, int(value))
    except ValueError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return 2 if cores > 1 else 0


def _start_method() -> str:
    """``fork`` where it exists (Linux, macOS): the workers start at once with the parent's imports
    (matplotlib, nilearn.plotting) already loaded; ``spawn`` elsewhere."""
    import multiprocessing

    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def _warm_up() -> None:
    """Initializer of spawned workers: import the figure modules once per worker."""
    import importlib

    for name in _WARM_MODULES:
        importlib.import_module(name)


def _call(func, args, kwargs):
    return func(*args, **kwargs)


class FigurePool:
    """A pool of ``n_jobs`` drawing processes, started at the first :meth:`submit`.

    ``submit`` returns at once; :meth:`results` waits for every submitted figure, in submission
    order, and re-raises the first error. Use it as a context manager so the workers always stop.
    The workers are forked when the first figure is submitted (the modules the figure functions need
    are then already imported); ``start_method="spawn"`` starts clean interpreters instead.
    """

    def __init__(self, n_jobs: int | None = None, start_method: str | None = None):
        self.n_jobs = default_n_jobs() if n_jobs is None else max(0, int(n_jobs))
        self.start_method = start_method or _start_method()
        self._futures: list[Future] = []
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            import multiprocessing

            ctx = multiprocessing.get_context(self.start_method)
            init = None if self.start_method == "fork" else _warm_up
            self._executor = ProcessPoolExecutor(max_workers=self.n_jobs, mp_context=ctx, initializer=init)
        return self._executor

    def submit(self, func: Callable[..., Any], *args, **kwargs) -> Future:
        """Queue ``func(*args, **kwargs)`` (drawn at once in this process when ``n_jobs == 0``)."""
        if self.n_jobs == 0:
            fut: Future = Future()
            try:
                fut.set_result(func(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - re-raised by results()
                fut.set_exception(exc)
        else:
            fut = self._pool().submit(_call, func, args, kwargs)
        self._futures.append(fut)
        return fut

    def results(self) -> list[Any]:
        """Wait for every submitted figure; their return values (paths) in submission order."""
        try:
            return [f.result() for f in self._futures]
        except BaseException:
            for f in self._futures:
                f.cancel()
            raise

    def close(self) -> None:
        """Stop the workers (pending figures are cancelled; call :meth:`results` first to keep them)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> FigurePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def draw_all(jobs: Iterable[Job], n_jobs: int | None = 2) -> list[Any]:
    """Draw every ``(func, args, kwargs)`` job on ``n_jobs`` processes; return values in job order.

    Parameters
    ----------
    jobs : iterable of (callable, tuple, dict)
        Figure functions of this package with their positional and keyword arguments.
    n_jobs : int or None
        Worker processes (None: :func:`default_n_jobs`); 0, or a single job, draws in this process.

    Returns
    -------
    list
        What each function returned (the output paths), in the order of ``jobs``.

    Raises
    ------
    Exception
        The first error raised by a figure function.
    """
    jobs = list(jobs)
    n = default_n_jobs() if n_jobs is None else n_jobs
    if len(jobs) <= 1:
        n = 0
    with FigurePool(min(n, len(jobs))) as pool:
        for func, args, kwargs in jobs:
            pool.submit(func, *args, **(kwargs or {}))
        return pool.results()
