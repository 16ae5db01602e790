"""Number formatting and prose rendering.

Numbers are formatted here and nowhere else. Templates in ``analysis/templates``
use the filters registered below (``z``, ``p``, ``mni``, ``k``, ``mm3``, ``pct``,
``num``) and never round on their own.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import jinja2

__all__ = ["fmt_z", "fmt_p", "fmt_p_cell", "fmt_mni", "fmt_k", "fmt_mm3", "fmt_pct", "fmt_num",
           "fmt_list", "render", "environment"]

TEMPLATE_DIR = Path(__file__).parent / "templates"


def fmt_z(value: float) -> str:
    """Format a z (or t) statistic with two decimals, e.g. ``5.12`` or ``-3.40``."""
    text = f"{float(value):.2f}"
    if text == "-0.00":
        text = "0.00"
    return text.replace("-", "\u2212")


def fmt_p(value: float) -> str:
    """Format a p-value APA style: ``p < .001`` or ``p = .032``."""
    value = float(value)
    if not math.isfinite(value):
        return "p = n/a"
    if value < 0.001:
        return "p < .001"
    text = f"{value:.3f}"
    if text.startswith("0"):
        text = text[1:]
    if text == "1.000":
        text = "1"
    return f"p = {text}"


def fmt_p_cell(value: float) -> str:
    """A p-value for a table cell: ``< .001`` or ``.032`` (the column header says p)."""
    return fmt_p(value).replace("p = ", "").replace("p ", "")


def fmt_mni(coords: Sequence[float]) -> str:
    """Format a coordinate triplet as ``(x, y, z) mm`` with whole millimetres."""
    x, y, z = (int(round(float(c))) for c in coords)
    return f"({x}, {y}, {z}) mm".replace("-", "\u2212")


def fmt_k(n_voxels: int) -> str:
    """Format a voxel count: ``1 voxel``, ``1,234 voxels``."""
    n = int(n_voxels)
    return f"{n:,} voxel" + ("" if n == 1 else "s")


def fmt_mm3(volume: float) -> str:
    """Format a volume in cubic millimetres, e.g. ``2,430 mm³``."""
    return f"{int(round(float(volume))):,} mm\u00b3"


def fmt_pct(fraction: float, digits: int = 1) -> str:
    """Format a fraction in [0, 1] as a percentage, e.g. ``0.853 -> 85.3 %``."""
    return f"{100 * float(fraction):.{digits}f} %"


def fmt_num(value: float, digits: int = 2) -> str:
    """Format a plain number with ``digits`` decimals (minus sign typographic)."""
    text = f"{float(value):.{digits}f}"
    if float(text) == 0:
        text = text.lstrip("-")
    return text.replace("-", "\u2212")


def fmt_list(items: Iterable[str]) -> str:
    """Join items as English prose: ``a``, ``a and b``, ``a, b and c``."""
    items = [str(i) for i in items]
    if not items:
        return ""
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


PARAGRAPH = "\u00b6\u00b6"  # marks a paragraph break (a blank line in the template source)


class _ParagraphLoader(jinja2.FileSystemLoader):
    """Marks blank lines of the template source as paragraph breaks; other newlines become spaces."""

    def get_source(self, environment, template):
        source, filename, uptodate = super().get_source(environment, template)
        return re.sub(r"\n[ \t]*\n\s*", f"\n{PARAGRAPH}\n", source), filename, uptodate


def environment() -> jinja2.Environment:
    """Return the Jinja2 environment with the number filters registered.

    In templates, a blank line separates paragraphs; every other run of whitespace
    (including newlines around block tags) becomes one space.
    """
    env = jinja2.Environment(
        loader=_ParagraphLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        autoescape=False,
    )
    env.filters.update(z=fmt_z, p=fmt_p, mni=fmt_mni, k=fmt_k, mm3=fmt_mm3,
                       pct=fmt_pct, num=fmt_num, join_en=fmt_list)
    return env


def render(template: str, **context) -> str:
    """Render ``analysis/templates/<template>`` with ``context``.

    Parameters
    ----------
    template : str
        File name in ``analysis/templates``, e.g. ``"results.md.j2"``.
    **context
        Objects the template reads (results dataclasses, plain values).

    Returns
    -------
    str
        Markdown with pandoc ``@citekeys``; whitespace between paragraphs normalised.
    """
    text = environment().get_template(template).render(**context)
    paragraphs = [" ".join(p.split()) for p in text.split(PARAGRAPH)]
    paragraphs = [re.sub(r"\s+([,;:)]|\.(?!\d))", r"\1", p).replace("( ", "(") for p in paragraphs]
    return "\n\n".join(p for p in paragraphs if p)
