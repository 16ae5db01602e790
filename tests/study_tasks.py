"""Subject tasks for the Dask tests of :mod:`analysis.study` (importable by the worker processes)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from analysis.study import first_level_subject


def kill_worker_once(config, subject, runs, out, contrast, *, victim: str = "02"):
    """The subject task, except that the first attempt for ``victim`` dies half-way.

    It fits the subject's first run (its outputs published, a one-run fixed-effects map written), then SIGKILLs
    its own worker process, as the kernel's out-of-memory killer or a pre-empted node would. A marker file next to
    the study says the kill happened; Dask's retry then runs the whole subject on a fresh worker.
    """
    marker = Path(out) / f"killed-sub-{subject}"
    environ = {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    (Path(out) / f"environ-sub-{subject}.json").write_text(json.dumps(environ))  # what the worker ran under
    if subject == victim and not marker.exists():
        first_level_subject(config, subject, runs[:1], out, contrast)
        marker.write_text(f"worker {os.getpid()} killed in the middle of sub-{subject}\n")
        os.kill(os.getpid(), signal.SIGKILL)
    return first_level_subject(config, subject, runs, out, contrast)
