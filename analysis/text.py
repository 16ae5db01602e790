"""Number formatting and prose rendering.

Numbers are formatted here and nowhere else. Templates in ``analysis/templates``
use the filters registered below (``z``, ``p``, ``mni``, ``k``, ``mm3``, ``pct``,
``num``) and never round on their own.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

import jinja2

__all__ = ["fmt_z", "fmt_p", "fmt_p_cell", "fmt_mni", "fmt_k", "fmt_mm3", "fmt_pct", "fmt_num",
           "fmt_list", "fmt_label", "fmt_signal", "render", "environment", "Md", "md", "md_escape", "md_code", "md_value",
           "plain_text"]

TEMPLATE_DIR = Path(__file__).parent / "templates"


# ----------------------------------------------------------------------------- escaping
#
# One rule for every string that enters the report's Markdown (and, through Quarto, its HTML, typst and
# Word output): text is literal unless the package itself marked it as Markdown with ``md()``. The
# template environment applies it to every ``{{ ... }}`` expression, so no template can forget it; the
# number filters below return Markdown (their output is the package's own).
# Tables (``tables.markdown``), the title page (``metadata.to_quarto``) and the values the chapters show
# (``analysis.pages``, through ``md_value``) apply the same rule.

class Md(str):
    """A string of Markdown written by the package (citations, emphasis): inserted as it is."""

    __slots__ = ()


def md(text: str) -> Md:
    """Mark ``text`` as the package's own Markdown (never use it on user-supplied text)."""
    return text if isinstance(text, Md) else Md(text)


# characters that start Markdown, pandoc or Quarto syntax anywhere in a line: links and images [..](..),
# code `..`, emphasis *..*, shortcodes {{< >}} and attributes {=html}, math $..$, citations @key,
# sub/superscript ~ ^, and the backslash itself
_MD_SPECIAL = set("\\`*[]{}$@~^&")
_DASHES = re.compile(r"--+")  # smart typography would make -- an en dash
# a "<" that could open raw HTML or an autolink (<script>, </p>, <!--, <http://...>); "q < 0.05" stays
_TAG_OPEN = re.compile(r"<(?=[^\s\d=])")
# "_" at a word boundary (emphasis); inside a word (pumps_demean) pandoc reads it literally
_EMPH_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
# what opens a block at the start of a line: headings, block quotes, lists, tables, divs, setext rules
_DOUBLE_BRACE = re.compile(r"\{\{+|\}\}+|::+")  # shortcodes; ::: (Quarto warns of a broken fenced div)
_BLOCK_START = re.compile(r"^([#>+=:-]|\d+[.)](?=\s|$))")


def plain_text(text) -> str:
    """A user string on one line: control characters (newlines, tabs) become spaces, runs of spaces one space."""
    text = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in str(text))
    return re.sub(r"\s+", " ", text)


def md_escape(text, keep_paragraphs: bool = False) -> Md:
    """Literal text as Markdown: every syntax character backslash-escaped, HTML never passed through.

    Parameters
    ----------
    text : str
        User-supplied text (a condition name, a title, a file name).
    keep_paragraphs : bool
        Keep blank lines as paragraph breaks (an abstract); otherwise the text becomes one line.
    """
    if isinstance(text, Md):
        return text
    if keep_paragraphs:
        parts = [plain_text(p).strip() for p in re.split(r"\n[ \t]*\n", str(text))]
        return Md("\n\n".join(md_escape(p) for p in parts if p))
    out = []
    # Quarto finds shortcodes ({{< >}}) in metadata even after backslash escapes, and a stray ">}}" stops the
    # render: a word joiner (U+2060, invisible) keeps doubled braces apart
    for ch in _DOUBLE_BRACE.sub(lambda m: "\u2060".join(m.group(0)), plain_text(text)):
        if ch in _MD_SPECIAL:
            out.append("\\" + ch)
        elif ch == "\u00b6":  # the templates' paragraph marker
            out.append("&para;")
        else:
            out.append(ch)
    escaped = _EMPH_UNDERSCORE.sub(r"\\_", _TAG_OPEN.sub(r"\\<", "".join(out)))
    escaped = _DASHES.sub(lambda m: "".join("\\" + c for c in m.group(0)), escaped)
    return Md(_BLOCK_START.sub(lambda m: m.group(0)[:-1] + "\\" + m.group(0)[-1], escaped))


def md_code(text) -> Md:
    """``text`` as an inline code span, whatever backticks it holds (literal inside, nothing interpreted)."""
    text = plain_text(text)
    runs = [len(r) for r in re.findall(r"`+", text)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return Md(f"{fence}{pad}{text}{pad}{fence}")


def md_value(value) -> Md:
    """A value as Markdown: package Markdown as is, anything else (numbers, user text) as literal text.

    Applied by Jinja to every ``{{ ... }}`` of the templates and to every value a chapter shows with
    ``[r.<chapter>.<value>]{.value}`` (:mod:`analysis.pages`)."""
    if isinstance(value, Md):
        return value
    if isinstance(value, bool) or value is None:
        return md_escape(str(value))
    if isinstance(value, (int, float)):
        return md_escape(repr(value) if isinstance(value, float) else str(value))
    return md_escape(value)


def _md_filter(fn):
    """A number filter returns the package's own text: mark it as Markdown."""
    def wrapped(*args, **kwargs):
        return md_escape(fn(*args, **kwargs))
    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped


def _join_filter(items) -> Md:
    """``join_en`` in templates: each item escaped unless it is package Markdown."""
    return Md(fmt_list(md_value(i) for i in items))


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


def fmt_label(label: str, distance_mm: float | None = None) -> str:
    """An atlas label as read at a point: ``Left Heschl's Gyrus``, or ``nearest: Right Planum Temporale,
    2.2 mm`` when the point itself lies outside every labelled region (distance > 0)."""
    try:
        d = float(distance_mm)
    except (TypeError, ValueError):
        d = 0.0
    if not math.isfinite(d) or d <= 0:
        return str(label)
    return f"nearest: {label}, {d:.1f} mm"


def fmt_signal(values: Sequence[float], min_digits: int = 2, max_digits: int = 4) -> list[str]:
    """Numbers shown together (an effect and its CI) with enough decimals that none of the non-zero
    ones reads as 0.00 and signs stay visible: ``[-0.002, 0.011]`` -> ``["−0.002", "0.011"]``."""
    vals = [float(v) for v in values]
    digits = min_digits
    while digits < max_digits and any(v != 0 and math.isfinite(v) and round(abs(v), digits) == 0 for v in vals):
        digits += 1
    return [fmt_num(v, digits) if math.isfinite(v) else "n/a" for v in vals]


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
        finalize=md_value,  # every expression is literal text unless the package marked it md()
    )
    env.filters.update({name: _md_filter(fn) for name, fn in dict(
        z=fmt_z, p=fmt_p, mni=fmt_mni, k=fmt_k, mm3=fmt_mm3, pct=fmt_pct, num=fmt_num).items()})
    env.filters.update(join_en=_join_filter, code=md_code, md=md, label=fmt_label, signal=fmt_signal)
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
