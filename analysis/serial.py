"""The one serialisation mechanism of the results: pydantic, driven by the dataclasses' type hints.

Every result object is a frozen dataclass; :func:`to_json` and :func:`from_json` turn any of them (and the whole
:class:`analysis.results.Results` tree) into JSON and back through a :class:`pydantic.TypeAdapter`, so no class
writes its own ``to_dict`` / ``from_dict``. Tables are pandas DataFrames, typed :data:`Table`: they travel as
``{"columns": [...], "data": [[...], ...]}`` (with ``"index"`` when the frame has a named index), NaN and NA
as ``null``. Non-finite floats outside tables travel as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``.
"""

from __future__ import annotations

import functools
import math
from typing import Annotated, Any, TypeVar

import pandas as pd
from pydantic import ConfigDict, PlainSerializer, PlainValidator, TypeAdapter

__all__ = ["Table", "to_json", "from_json", "to_data", "from_data", "JSON_CONFIG"]

T = TypeVar("T")

#: pydantic settings every result dataclass carries (``__pydantic_config__``): NaN and inf survive the round trip.
JSON_CONFIG = ConfigDict(ser_json_inf_nan="strings")


def _cell(v: Any) -> Any:
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if hasattr(v, "item"):  # numpy scalars
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _table_to_data(df: pd.DataFrame) -> dict:
    index = df.index.name
    if index is None and not df.index.equals(pd.RangeIndex(len(df))):
        index = "index"  # an unnamed index that holds information is kept, under this name
        df = df.rename_axis(index=index)
    frame = df.reset_index() if index is not None else df
    out = {"columns": [str(c) for c in frame.columns],
           "data": [[_cell(v) for v in row] for row in frame.itertuples(index=False)]}
    if index is not None:
        out["index"] = str(index)
    return out


def _table_from_data(value: Any) -> pd.DataFrame:
    if isinstance(value, pd.DataFrame):
        return value
    if not isinstance(value, dict) or not {"columns", "data"} <= set(value):
        raise ValueError("a table is {'columns': [...], 'data': [[...], ...]}")
    df = pd.DataFrame(value["data"], columns=value["columns"])
    return df.set_index(value["index"]) if value.get("index") else df


#: A pandas DataFrame field of a result dataclass (plain records in JSON).
Table = Annotated[pd.DataFrame, PlainValidator(_table_from_data), PlainSerializer(_table_to_data)]


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def to_data(obj: Any, cls: type | None = None) -> Any:
    """``obj`` as JSON-ready Python data (dicts, lists, numbers, strings)."""
    return _adapter(cls or type(obj)).dump_python(obj, mode="json")


def from_data(cls: type[T], data: Any) -> T:
    """The typed ``cls`` tree from :func:`to_data`'s output (validated)."""
    return _adapter(cls).validate_python(data)


def to_json(obj: Any, cls: type | None = None) -> str:
    """``obj`` as JSON text (UTF-8, one-space indent, deterministic: the same object gives the same bytes)."""
    return _adapter(cls or type(obj)).dump_json(obj, indent=1).decode("utf-8")


def from_json(cls: type[T], text: str | bytes) -> T:
    """The typed ``cls`` tree from :func:`to_json`'s output (validated)."""
    return _adapter(cls).validate_json(text)
