"""Writing the project's own text files: whole or not at all, and only when their content changes.

A light module (the standard library only), so the pre-render hook's fast path can write through it without
importing pandas.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_file"]


def write_file(path: Path, body: str) -> bool:
    """Write ``body`` to ``path`` unless it holds it already; returns True when written.

    The text goes to a temporary file in the same folder first, renamed over ``path`` in one step, so a reader
    (Quarto, a second process) sees the old file or the new one, never half of one.
    """
    path = Path(path)
    try:
        if path.read_text(encoding="utf-8") == body:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(body, encoding="utf-8")
    os.replace(tmp, path)
    return True
