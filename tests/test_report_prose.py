"""Prose from hand-built results with planted clusters: what is listed is what is said."""

from types import SimpleNamespace

import numpy as np
import pandas as pd

from analysis import report, tables
from analysis.inference import CLUSTER_COLUMNS, ThresholdResult, ThresholdSpec
from analysis.results import ContrastResult


def _contrast(rows):
    """Main peaks only: (sign, peak z, size in voxels, label)."""
    table = pd.DataFrame([{"Cluster ID": str(i + 1), "Sign": "+" if z > 0 else "\u2212", "X": 10.0 * i, "Y": 0.0,
                           "Z": 0.0, "Peak Stat": z, "Peak p": 1e-6, "Cluster Size (voxels)": float(k),
                           "Cluster Size (mm3)": 27.0 * k, "Label": lab, "Label distance (mm)": 0.0}
                          for i, (z, k, lab) in enumerate(rows)], columns=CLUSTER_COLUMNS + ["Label", "Label distance (mm)"])
    pos, neg = table[table["Peak Stat"] > 0], table[table["Peak Stat"] < 0]
    spec = ThresholdSpec("fdr_cluster", "fdr", 0.05, None, 10, True)
    thr = ThresholdResult(spec, 3.5, int(pos["Cluster Size (voxels)"].sum()), int(neg["Cluster Size (voxels)"].sum()),
                          len(pos), len(neg), 50_000)
    return ContrastResult(name="listening", entity="listening", expression="listening", vector=(1.0,),
                          thresholds=(thr,), primary_key="fdr_cluster", clusters=table, z_max=9.0, z_min=-5.0,
                          direction="listening > rest")


def _res(c):
    return SimpleNamespace(contrast=lambda name=None: c, dataset=SimpleNamespace(space="MNI152NLin2009aSym"),
                           config=None)


def test_the_largest_clusters_are_the_ones_listed_and_negative_clusters_are_reported():
    # peaks ordered as nilearn orders them (highest z first); sizes are not in that order
    c = _contrast([(9.0, 85, "A"), (8.5, 173, "B"), (8.0, 40, "C"), (7.5, 117, "D"), (-5.0, 69, "PCC")])
    prose = report.results_text(_res(c))
    print("\n" + prose)
    assert "The 3 largest of the 4 clusters with listening > rest (by number of voxels) are" in prose
    listed = [int(k.replace(",", "")) for k in __import__("re").findall(r"\(([\d,]+) voxels\)", prose)]
    assert listed == [173, 117, 85, 69]  # largest first; the 40-voxel cluster is not among the 3 largest
    assert "The cluster with listening < rest is cluster 5 (69 voxels), peak z = \u22125.00" in prose
    assert "in PCC" in prose and "C)" not in prose


def test_cluster_table_p_column_says_uncorrected():
    """The peak's p value is named as SPM names it, beside the corrected ones: p(unc), p(FWE), q(FDR)."""
    c = _contrast([(9.0, 85, "A")])
    columns = list(tables.clusters(c, "+").columns)
    assert "Peak p(unc)" in columns and columns.index("Peak p(unc)") < columns.index("Peak p(FWE)")


def test_nothing_survives_wording_has_no_nested_undefined():
    c = _contrast([])
    spec = c.thresholds[0].spec
    c = ContrastResult(name="listening", entity="listening", expression="listening", vector=(1.0,),
                       thresholds=(ThresholdResult(spec, float("inf"), 0, 0, 0, 0, 50_000),), primary_key=spec.key,
                       clusters=c.clusters, z_max=3.1, z_min=-3.2, direction="listening > rest")
    prose = report.results_text(_res(c))
    print("\n" + prose)
    assert "undefined" not in prose and "((" not in prose and "found no z cut-off" in prose
    assert tables.thresholds(c)["z cut-off"].iloc[0] == "none: no voxel can pass"


def test_signal_numbers_keep_their_sign():
    from analysis.text import fmt_signal

    assert fmt_signal([0.004, -0.002, 0.011]) == ["0.004", "\u22120.002", "0.011"]  # not "0.00 to 0.01"
    assert fmt_signal([0.34, 0.29, 0.39]) == ["0.34", "0.29", "0.39"]
    assert np.isnan(float("nan")) and fmt_signal([float("nan")]) == ["n/a"]


def test_dmn_prose_without_the_schaefer_atlas_does_not_count_zero_parcels(sim_results):
    """An atlas that could not be loaded is named as missing, not counted as 'the 0 Default parcels'."""
    import dataclasses

    from analysis import report

    d = dataclasses.replace(sim_results.dmn.result, n_schaefer_parcels=0, network_schaefer=None)
    res = dataclasses.replace(sim_results, dmn=dataclasses.replace(sim_results.dmn, result=d))
    prose = report.dmn_text(res)
    assert "0 Default parcels" not in prose and "three ways" not in prose
    assert "We defined it in two ways" in prose and "could not be loaded in this run" in prose
    assert "We defined it in three ways" in report.dmn_text(sim_results)


def test_cluster_table_widths_keep_coordinates_whole_and_cap_long_labels():
    """The printed cluster table (tbl-colwidths="true" in chapters/03-results.qmd) takes its column widths from the
    separator row: a coordinate is one unbreakable piece, so its column is at least as wide as the longest one;
    a long label wraps in a column of at most 18 characters (plus padding) instead of squeezing the numbers."""
    label = "Left Superior Temporal Gyrus, posterior division (includes a long note)"
    c = _contrast([(9.0, 85, label), (-6.0, 40, "B")])
    shown = tables.clusters(c)
    md = tables.markdown(shown)
    header, separator = md.splitlines()[:2]
    names = [h.strip() for h in header.strip("|").split("|")]
    widths = dict(zip(names, (len(cell) for cell in separator.strip("|").split("|"))))
    assert "(10,\\ 0,\\ 0)" in md  # no-break spaces: a coordinate never wraps
    assert widths["Peak (x, y, z) mm"] >= len("(10, 0, 0)") + 2
    assert widths["Harvard-Oxford label"] <= 18 + 3 < len(label)
    assert widths["z"] < widths["Peak (x, y, z) mm"]
