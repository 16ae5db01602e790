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

The analysis process never needs matplotlib or ``nilearn.plotting`` itself: it names the figure
functions through :func:`figure_module` (``maps = figure_module("maps"); pool.submit(maps.plot_glass, ...)``),
whose references are resolved where the figure is drawn. The workers import the plotting modules as
they start (:meth:`FigurePool.start`), while the analysis goes on.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor

from typing import Any

__all__ = ["FigurePool", "FigureRef", "draw_all", "default_n_jobs", "beside_analysis_n_jobs", "figure_module"]

Job = tuple[Callable[..., Any], tuple, dict]

_WARM_MODULES = ("analysis.figures.maps", "analysis.figures.calibration", "analysis.figures.dmn")
WORKER_NICENESS = int(os.environ.get("ANALYSIS_FIGURE_NICENESS", "0") or 0)
"""Scheduling priority added to the drawing processes (``ANALYSIS_FIGURE_NICENESS``, default 0: none).

The analysis waits for every figure before it publishes, so figures drawn only on idle cores make it wait on a
busy machine: at niceness 19 the workers got almost no processor time while other users' processes ran, and the
run took 2.5 times as long as on a quiet machine. At the analysis's own priority they get their fair share of the
cores, quiet or busy."""


class FigureRef:
    """A picklable reference to a figure function, ``analysis.figures.<module>.<name>``, imported when called."""

    __slots__ = ("module", "name")

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def resolve(self) -> Callable[..., Any]:
        import importlib

        return getattr(importlib.import_module(self.module), self.name)

    def __call__(self, *args, **kwargs):
        return self.resolve()(*args, **kwargs)

    def __getstate__(self):
        return (self.module, self.name)

    def __setstate__(self, state):
        self.module, self.name = state

    def __repr__(self) -> str:
        return f"FigureRef({self.module}.{self.name})"


class _FigureModule:
    def __init__(self, module: str):
        self._module = module

    def __getattr__(self, name: str) -> FigureRef:
        if name.startswith("_"):
            raise AttributeError(name)
        return FigureRef(self._module, name)


def figure_module(name: str) -> _FigureModule:
    """``figure_module("maps").plot_glass`` is a :class:`FigureRef` to ``analysis.figures.maps.plot_glass``.

    Naming a figure this way does not import matplotlib in the calling process.
    """
    return _FigureModule(f"{__package__}.{name}")


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


def beside_analysis_n_jobs() -> int:
    """Drawing processes while an analysis runs in the calling process: ``ANALYSIS_FIGURE_JOBS`` if set, else 1
    (0 on one core).

    The analysis process is the other busy process: one drawing process beside it fills two cores without
    putting three processes on them, pays the plotting imports and first-figure costs once instead of twice,
    and holds one plotting process's memory instead of two (at the reference run, 0.72 GB for the process tree
    against 0.95 GB with two, the same wall time; ``bench/bench_scale.py``). A whole batch of figures with
    nothing else to do (:func:`draw_all`, a redraw) uses :func:`default_n_jobs`.
    """
    if os.environ.get("ANALYSIS_FIGURE_JOBS", ""):
        return default_n_jobs()
    return min(1, default_n_jobs())


def _start_method() -> str:
    """``fork`` where it exists (Linux, macOS): the workers start at once with the parent's imports
    (numpy, nibabel, nilearn) already loaded; ``spawn`` elsewhere."""
    import multiprocessing

    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def _exit_with_parent(parent: int | None) -> None:
    """Linux: have the kernel stop this worker when the analysis process dies (even by SIGKILL).

    A forked worker holds both ends of the pool's pipes, so it would otherwise wait for work forever.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - no libc prctl
        return
    if parent is not None and os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _warm_up(parent: int | None = None) -> None:
    """Initializer of every worker: follow the parent's death, set the priority, import the figure modules."""
    import importlib

    _exit_with_parent(parent)
    try:
        if WORKER_NICENESS:
            os.nice(WORKER_NICENESS)
    except (AttributeError, OSError):  # pragma: no cover - not POSIX, or not allowed
        pass
    for name in _WARM_MODULES:
        importlib.import_module(name)
    importlib.import_module(f"{__package__}._base").warm_up()
    _tune_gc()


def _tune_gc() -> None:
    """Fewer garbage collections while drawing.

    A figure creates hundreds of thousands of small matplotlib objects, and with Python's default thresholds
    the cyclic collector keeps scanning them and every module the worker imported: a quarter of the drawing
    time. The imported modules are moved out of the collector's sight (``gc.freeze``) and young objects are
    collected every 10,000 allocations instead of 700; memory stays the same (closed figures are freed by
    reference counting).
    """
    import gc

    gc.freeze()
    gc.set_threshold(10_000, 20, 100)


def _call(func, args, kwargs):
    return func(*args, **kwargs)


def _noop() -> None:
    return None


class FigurePool:
    """A pool of ``n_jobs`` drawing processes, started at the first :meth:`submit`.

    ``submit`` returns at once; :meth:`results` waits for every submitted figure, in submission
    order, and re-raises the first error. Use it as a context manager so the workers always stop.
    The workers are forked at :meth:`start` or at the first :meth:`submit`, lower their priority and import
    the figure modules; ``start_method="spawn"`` starts clean interpreters instead.
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
            self._executor = ProcessPoolExecutor(max_workers=self.n_jobs, mp_context=ctx, initializer=_warm_up,
                                                 initargs=(os.getpid(),))
        return self._executor

    def start(self) -> FigurePool:
        """Start the workers now (they import the plotting modules while the caller goes on computing)."""
        if self.n_jobs:
            pool = self._pool()
            for _ in range(self.n_jobs):  # the executor starts its processes when work is first submitted
                pool.submit(_noop)
        return self

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
