"""The COBIDAS-style checklist is filled in from the results and flags what they do not hold."""

from __future__ import annotations

import dataclasses

import pytest

from analysis import checklist as cl
from analysis.results import Preprocessing, PreprocessingContext

SECTIONS = ["Design", "Acquisition", "Preprocessing", "Model", "Inference", "Results", "Data sharing"]


def _item(table, item):
    rows = table[table["Item"] == item]
    assert len(rows) == 1, f"checklist item {item!r} appears {len(rows)} times"
    return rows.iloc[0]


@pytest.fixture(scope="module")
def table(sim_results):
    return cl.checklist(sim_results)


def test_checklist_has_the_four_columns_and_known_statuses(table):
    assert list(table.columns) == ["Section", "Item", "Value", "Status"]
    assert set(table["Status"]) <= set(cl.STATUSES)
    assert table["Value"].map(lambda v: isinstance(v, str) and v.strip() != "").all()


def test_checklist_covers_every_section_in_order(table):
    seen = list(dict.fromkeys(table["Section"]))
    assert seen == SECTIONS


def test_values_come_from_the_results(sim_results, table):
    res, c = sim_results, sim_results.contrast()
    assert _item(table, "Repetition time (TR)")["Value"].startswith(f"{res.dataset.t_r:g} s")
    assert _item(table, "Primary threshold")["Value"] == c.threshold_label
    assert _item(table, "Residual degrees of freedom")["Value"] == f"{res.model.dof:g}"
    assert f"{res.model.n_mask_voxels:,}" in _item(table, "Analysis mask")["Value"]
    assert res.versions["nilearn"] in _item(table, "Software")["Value"]
    assert f"{c.primary.n_pos:,} voxels" in _item(table, "Surviving voxels and clusters")["Value"]


def test_simulated_data_marks_scanner_items_not_applicable(table):
    assert _item(table, "Field strength and scanner")["Status"] == cl.NOT_APPLICABLE
    assert _item(table, "Motion correction")["Status"] == cl.NOT_APPLICABLE


def test_real_data_without_motion_correction_is_flagged(sim_results):
    ds = dataclasses.replace(sim_results.dataset, is_simulated=False, fallback_reason="", space="native")
    res = dataclasses.replace(sim_results, dataset=ds, preprocessing=None)
    t = cl.checklist(res)
    assert _item(t, "Motion correction")["Status"] == cl.MISSING
    assert _item(t, "Field strength and scanner")["Status"] == cl.MISSING
    if not any(col.startswith("Label") for col in sim_results.contrast().clusters.columns):
        assert _item(t, "Anatomical labels of peaks")["Status"] == cl.NOT_APPLICABLE  # scanner space

    ctx = PreprocessingContext(
        n_volumes=84, native_grid_label="", anat_grid_label="", realign_reference="mean", realign_levels=1,
        realign_iterations=("20",), normalisation="Affine", normalisation_resolution=2.0, syn_iterations=(),
        target_resolution=3, smoothing_fwhm=6.0, fd_radius=50.0, motion_regressors=12, ants_version="",
        nilearn_version="", total_seconds=1.0, mean_fd=0.12, median_fd=0.1, max_fd=0.9, fd_threshold=0.5,
        n_above=2, fraction_above=2 / 84, volumes_above=(3, 4), max_abs_translation_mm=1.0,
        max_abs_rotation_deg=1.0, mask_dice=0.9, anat_template_correlation=0.9, peak_rss_mb=100.0)
    pre = Preprocessing(ran=True, space="MNI152NLin2009cAsym", native_space="native", context=ctx)
    t = cl.checklist(dataclasses.replace(res, preprocessing=pre))
    row = _item(t, "Motion correction")
    assert row["Status"] == cl.REPORTED and "mean volume" in row["Value"] and "max 0.900 mm" in row["Value"]
    assert _item(t, "Spatial smoothing")["Value"] == "Gaussian kernel, 6 mm FWHM (after normalisation)"
    assert "ANTs (Affine)" in _item(t, "Analysis space")["Value"]


@pytest.mark.parametrize("primary, status", [("fpr", cl.MISSING), ("z3", cl.MISSING),
                                             ("fdr", cl.REPORTED), ("bonferroni", cl.REPORTED)])
def test_uncorrected_primary_threshold_is_flagged(sim_results, primary, status):
    c = dataclasses.replace(sim_results.contrast(), primary_key=primary)
    res = dataclasses.replace(sim_results, contrasts={c.name: c})
    assert _item(cl.checklist(res), "Multiple-comparison correction")["Status"] == status


def test_shared_files_missing_on_disk_are_flagged(sim_results, tmp_path):
    res = dataclasses.replace(sim_results, output_dir=str(tmp_path))
    t = cl.checklist(res)
    assert (t[t["Section"] == "Data sharing"].set_index("Item").loc[
        ["Unthresholded z map", "Effect-size map", "Cluster table"], "Status"] == cl.MISSING).all()


def test_summary_counts_every_item(table):
    counts = cl.summary(table)
    assert set(counts) == set(cl.STATUSES)
    assert sum(counts.values()) == len(table)


def test_missing_callout_lists_each_missing_item(sim_results):
    ds = dataclasses.replace(sim_results.dataset, is_simulated=False, fallback_reason="", space="native")
    t = cl.checklist(dataclasses.replace(sim_results, dataset=ds, preprocessing=None))
    callout = cl.missing_callout(t)
    assert callout.startswith("::: {.callout-warning}")
    for row in t[t["Status"] == cl.MISSING].itertuples():
        assert f"- {row.Section}: {row.Item}" in callout
    assert cl.missing_callout(t[t["Status"] != cl.MISSING]) == ""


def test_display_names_each_section_once_and_bolds_missing(table):
    shown = cl.display(table)
    assert [s for s in shown["Section"] if s] == SECTIONS
    assert set(shown["Status"]) <= {cl.REPORTED, cl.NOT_APPLICABLE, f"**{cl.MISSING}**"}
