"""The results tree: typed all the way down, one serialisation mechanism, an exact JSON round trip."""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import results as results_module
from analysis import serial
from analysis.results import Results

PACKAGE = Path(results_module.__file__).parent


def assert_tree_equal(a, b, where: str = "results") -> None:
    """Field by field: dataclasses recursively, tables with pandas, floats with NaN equal to NaN."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_tree_equal(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_dtype=False, obj=where)
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_tree_equal(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_tree_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert (math.isnan(a) and math.isnan(b)) or a == b, f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_results_round_trip_through_json_as_typed_trees(sim_results):
    text = sim_results.to_json()
    back = Results.from_text(text, output_dir=sim_results.output_dir)
    assert_tree_equal(back, sim_results)
    assert back.to_json() == text  # and the same bytes again
    # the parts the chapters read are objects, not dicts
    assert back.dmn.result.network.p == sim_results.dmn.result.network.p
    assert back.calibration.main.null_sd == sim_results.calibration.main.null_sd
    assert back.rft.voxel.z_threshold == sim_results.rft.voxel.z_threshold
    assert back.preprocessing.ran is False and back.preprocessing.reason
    assert back.dmn.overlaps[0].n_below == sim_results.dmn.overlaps[0].n_below


def test_the_saved_results_file_is_the_tree(sim_results):
    saved = sim_results.path("results/results.json").read_text(encoding="utf-8")
    assert saved == sim_results.to_json()
    assert "NaN" not in re.sub(r'"NaN"', "", saved)  # standard JSON: non-finite floats travel as strings
    assert '"output_dir"' not in saved  # where the files are now is not part of the results


def test_non_finite_numbers_and_tables_survive():
    from analysis.inference import ThresholdResult, ThresholdSpec

    r = ThresholdResult(ThresholdSpec("fdr", "fdr", 0.05, None, 0, True), math.inf, 0, 0, 0, 0, 10)
    assert serial.from_json(ThresholdResult, serial.to_json(r)) == r
    table = pd.DataFrame({"x": [1.0, np.nan], "label": ["a", None]}).set_index(pd.Index(["r1", "r2"], name="row"))
    back = serial.from_data(serial.Table, serial.to_data(table, serial.Table))
    pd.testing.assert_frame_equal(back, table, check_dtype=False)


def _annotations(cls) -> list:
    hints = typing.get_type_hints(cls, include_extras=True)
    return [hints[f.name] for f in dataclasses.fields(cls)]


def test_every_part_of_the_tree_is_typed():
    """No ``Any`` and no untyped dict anywhere below Results (the old ``extras`` bag of dicts is gone)."""
    seen: set[type] = set()

    def walk(tp):
        origin = typing.get_origin(tp)
        if tp is typing.Any:
            raise AssertionError("an Any in the results tree")
        if origin is typing.Annotated:
            return walk(typing.get_args(tp)[0])
        if origin is not None:
            for arg in typing.get_args(tp):
                if arg is not Ellipsis:
                    walk(arg)
            return
        if dataclasses.is_dataclass(tp) and tp not in seen:
            seen.add(tp)
            for ann in _annotations(tp):
                walk(ann)

    walk(Results)
    assert "extras" not in {f.name for f in dataclasses.fields(Results)}
    names = {c.__name__ for c in seen}
    assert {"DMNAnalysis", "DMNResult", "CalibrationResults", "Calibration", "RFTInference", "Preprocessing",
            "AtlasInfo", "ContrastResult", "ThresholdResult"} <= names


def test_no_class_writes_its_own_json():
    """One serialisation mechanism (analysis.serial): no hand-written to_dict / from_dict pairs."""
    offenders = [f"{p.name}:{n}" for p in sorted(PACKAGE.rglob("*.py"))
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
                 if re.match(r"\s*def (to_dict|from_dict)\(", line)]
    assert not offenders, offenders
