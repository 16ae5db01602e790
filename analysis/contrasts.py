"""Contrasts written by condition name, parsed by our own small grammar (never evaluated).

A contrast is a linear combination of design columns::

    listening                      one condition against the implicit baseline
    listening - control            a difference
    0.5 * (left + right) - rest2   weights, parentheses
    "left hand" - 'right hand'     a condition whose name is not an identifier, quoted
    (a + b) / 2                    division by a number

The expression is parsed with :mod:`ast` and walked by hand: only design-column names (exact ASCII
identifiers or quoted strings), finite numbers, unary ``+``/``-``, binary ``+``/``-``, ``*`` with a
number on one side, ``/`` by a non-zero number and parentheses are accepted. The weight vector is
computed here; nilearn only ever receives numbers (its own string contrasts go through
``pandas.DataFrame.eval``, which would run code).
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Sequence

import numpy as np

__all__ = ["ContrastError", "contrast_vector", "check_syntax", "referenced_columns", "MAX_LENGTH", "entity",
           "needs_quotes"]

MAX_LENGTH = 2000  # characters; a contrast is a short formula
_MAX_DEPTH = 50
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class ContrastError(ValueError):
    """A contrast that cannot be read or does not fit the design; the message names the contrast."""


def entity(name: str) -> str:
    """BIDS entity value for a contrast name: letters and digits only (``task_vs_rest`` -> ``taskVsRest``)."""
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", name) if p]
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:]) if parts else "contrast"


def needs_quotes(column: str) -> bool:
    """Whether a design column must be quoted in a contrast (it is not a plain ASCII identifier)."""
    return not _IDENT.match(column)


def check_syntax(expression: str, name: str = "") -> None:
    """Raise :class:`ContrastError` if ``expression`` is not a valid contrast formula (names not checked)."""
    _Linear(None, _label(name, expression)).parse(expression)


def referenced_columns(expression: str, name: str = "") -> list[str]:
    """The column names a contrast refers to, in order of appearance (syntax checked, names not)."""
    return list(_Linear(None, _label(name, expression)).parse(expression))


def contrast_vector(expression: str, columns: Sequence[str], name: str = "",
                    conditions: Sequence[str] | None = None) -> np.ndarray:
    """Weights over ``columns`` for a contrast written by column name.

    Raises
    ------
    ContrastError
        For a syntax this grammar does not accept, an unknown name, division by zero or a
        non-finite weight; one line naming the contrast.
    """
    columns = [str(c) for c in columns]
    label = _label(name, expression)
    weights = _Linear(columns, label, conditions).parse(expression)
    vec = np.zeros(len(columns), dtype=float)
    index = {c: i for i, c in enumerate(columns)}
    for col, w in weights.items():
        vec[index[col]] += w
    if not np.all(np.isfinite(vec)):
        raise ContrastError(f"contrast {label}: its weights are not finite numbers; use moderate weights")
    return vec


def _label(name: str, expression: str) -> str:
    return repr(name) if name else repr(expression[:60])


class _Linear:
    """Walks the syntax tree of a contrast and returns ``{column: weight}``."""

    def __init__(self, columns: Sequence[str] | None, label: str, conditions: Sequence[str] | None = None):
        self.columns = None if columns is None else set(columns)
        self.order = list(columns) if columns is not None else []
        self.conditions = list(conditions) if conditions is not None else None
        self.label = label
        self.source = ""

    def fail(self, why: str, fix: str = "") -> ContrastError:
        fix = fix or ("write it as a sum of condition names with numeric weights, e.g. \"a - b\" or "
                      "\"0.5 * (a + b)\"; quote a name with spaces: \"'left hand' - rest2\"")
        return ContrastError(f"contrast {self.label}: {why}; {fix}")

    def parse(self, expression: str) -> dict[str, float]:
        if not isinstance(expression, str):
            raise self.fail("must be a string")
        if not expression.strip():
            raise self.fail("is empty", "write it by condition name, e.g. \"listening\"")
        if len(expression) > MAX_LENGTH:
            raise self.fail(f"is {len(expression)} characters long (at most {MAX_LENGTH})")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in expression):
            raise self.fail("holds a control character (newline, tab, ...)")
        self.source = expression
        try:
            tree = ast.parse(expression.strip(), mode="eval")
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            raise self.fail(f"is not a formula ({type(exc).__name__})") from None
        return self.walk(tree.body, 0)

    def walk(self, node: ast.AST, depth: int) -> dict[str, float]:
        if depth > _MAX_DEPTH:
            raise self.fail(f"is nested more than {_MAX_DEPTH} levels deep")
        if isinstance(node, ast.Name):
            return {self.column(node.id, node, quoted=False): 1.0}
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                return {self.column(node.value, node, quoted=True): 1.0}
            raise self.fail("a number on its own is not a condition", "multiply a condition by it, e.g. \"2 * a\"")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            inner = self.walk(node.operand, depth + 1)
            return inner if isinstance(node.op, ast.UAdd) else {k: -v for k, v in inner.items()}
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
            left, right = self.walk(node.left, depth + 1), self.walk(node.right, depth + 1)
            sign = 1.0 if isinstance(node.op, ast.Add) else -1.0
            out = dict(left)
            for k, v in right.items():
                out[k] = out.get(k, 0.0) + sign * v
            return out
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            left_num, right_num = self.number(node.left, depth), self.number(node.right, depth)
            if left_num is not None and right_num is None:
                return {k: left_num * v for k, v in self.walk(node.right, depth + 1).items()}
            if right_num is not None and left_num is None:
                return {k: right_num * v for k, v in self.walk(node.left, depth + 1).items()}
            if left_num is not None:
                raise self.fail("multiplies two numbers without a condition")
            raise self.fail("multiplies two conditions (a contrast is linear)")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            divisor = self.number(node.right, depth)
            if divisor is None:
                raise self.fail("divides by something that is not a number")
            if divisor == 0:
                raise self.fail("divides by zero", "divide by a non-zero number, e.g. \"(a + b) / 2\"")
            return {k: v / divisor for k, v in self.walk(node.left, depth + 1).items()}
        raise self.fail(f"uses {_describe(node)}, which a contrast cannot contain")

    def number(self, node: ast.AST, depth: int) -> float | None:
        """The value of a purely numeric sub-expression (``2``, ``-0.5``, ``1/3``), else None."""
        if depth > _MAX_DEPTH:
            raise self.fail(f"is nested more than {_MAX_DEPTH} levels deep")
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            value = float(node.value)
            if not math.isfinite(value) or abs(value) > 1e12:
                raise self.fail(f"uses the weight {node.value!r}", "use a finite weight of moderate size")
            return value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            inner = self.number(node.operand, depth + 1)
            return None if inner is None else (inner if isinstance(node.op, ast.UAdd) else -inner)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            a, b = self.number(node.left, depth + 1), self.number(node.right, depth + 1)
            if a is None or b is None:
                return None
            if isinstance(node.op, ast.Div):
                if b == 0:
                    raise self.fail("divides by zero", "divide by a non-zero number, e.g. \"(a + b) / 2\"")
                return a / b
            return a + b if isinstance(node.op, ast.Add) else a - b if isinstance(node.op, ast.Sub) else a * b
        if isinstance(node, ast.Constant) and not isinstance(node.value, str):
            raise self.fail(f"uses the value {node.value!r}, which is not a weight")
        return None

    def column(self, name: str, node: ast.AST, quoted: bool) -> str:
        if not quoted:
            # Python folds Unicode identifiers to NFKC (full-width letters become ASCII); accept only the
            # exact ASCII text the user wrote
            written = ast.get_source_segment(self.source.strip(), node)
            if written != name or not name.isascii():
                raise self.fail(f"uses the non-ASCII name {written!r}",
                                "write condition names in plain ASCII, or quote the exact name")
        if self.columns is not None and name not in self.columns:
            raise self.unknown(name)
        return name

    def unknown(self, name: str) -> ContrastError:
        if self.conditions is not None:
            valid = "valid conditions: " + ", ".join(repr(c) for c in self.conditions)
        else:
            valid = "valid design columns: " + ", ".join(repr(c) for c in self.order)
        return ContrastError(f"contrast {self.label} names unknown condition(s) {name!r}; {valid} "
                             "(rest is the implicit baseline)")


def _describe(node: ast.AST) -> str:
    kinds = {ast.Call: "a function call", ast.Attribute: "an attribute", ast.Subscript: "indexing",
             ast.Lambda: "a lambda", ast.Compare: "a comparison", ast.BoolOp: "and/or",
             ast.MatMult: "@", ast.JoinedStr: "an f-string"}
    for kind, text in kinds.items():
        if isinstance(node, kind):
            return text
    if isinstance(node, ast.BinOp):
        return f"the operator {type(node.op).__name__}"
    if isinstance(node, ast.UnaryOp):
        return f"the operator {type(node.op).__name__}"
    return type(node).__name__
