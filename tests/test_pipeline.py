"""End to end on the simulated dataset (full size, run once per session)."""

import json
import re

import nibabel as nib
import numpy as np
import pandas as pd

from analysis import report, run, text
from analysis.results import Results


def test_recovers_ground_truth_at_fdr(sim_results):
    rec = sim_results.contrast("listening").recovery
    print(f"\nsimulated recovery at FDR q < .05: sensitivity {rec['sensitivity']:.3f} "
          f"(auditory voxels {rec['n_auditory']:.0f}), false discovery proportion {rec['fdp']:.3f} "
          f"({rec['n_false_positive']:.0f} of {rec['n_suprathreshold']:.0f} suprathreshold voxels)")
    assert rec["sensitivity"] >= 0.8
    assert rec["fdp"] <= 0.1


def test_outputs_exist_and_maps_load(sim_results):
    for rel in sim_results.figures.values():
        assert sim_results.path(rel).stat().st_size > 1000
    c = sim_results.contrast()
    z = nib.load(sim_results.path(c.files["z"]))
    assert z.shape == sim_results.dataset.shape[:3]
    sidecar = json.loads(sim_results.path(c.files["z_thresholded"]).with_suffix("").with_suffix(".json").read_text())
    assert sidecar["Contrast"] == "listening" and sidecar["Threshold"] == c.primary.label
    table = pd.read_csv(sim_results.path(c.files["clusters"]), sep="\t")
    assert len(table) == len(c.clusters)


def test_prose_agrees_with_the_cluster_table(sim_results):
    c = sim_results.contrast()
    prose = report.results_text(sim_results)
    mentioned = re.findall(r"\(([\d,]+) voxels\), peak z = (\u2212?[\d.]+) at \((\u2212?\d+), (\u2212?\d+), (\u2212?\d+)\) mm",
                           prose)
    assert mentioned, prose
    peaks = c.peaks()
    for k, zval, x, y, z in mentioned:
        xyz = [int(v.replace("\u2212", "-")) for v in (x, y, z)]
        row = peaks[(peaks["X"].round() == xyz[0]) & (peaks["Y"].round() == xyz[1]) & (peaks["Z"].round() == xyz[2])]
        assert len(row) == 1, (xyz, peaks)
        assert text.fmt_z(row["Peak Stat"].iloc[0]) == zval
        assert int(row["Cluster Size (voxels)"].iloc[0]) == int(k.replace(",", ""))
    p = c.primary
    assert text.fmt_k(p.n_pos) in prose and c.direction in prose


def test_results_round_trip_and_cache_hit(sim_results, sim_config_path):
    again = run(sim_config_path)
    assert again.cache_key == sim_results.cache_key
    assert again.to_json() == sim_results.to_json()
    path = sim_results.path("results/results.json")
    assert Results.from_json(path).to_json() == path.read_text()


def test_nothing_survives_reads_well(sim_results):
    import dataclasses

    from analysis.inference import ThresholdResult

    c = sim_results.contrast()
    empty = dataclasses.replace(
        c, thresholds=tuple(dataclasses.replace(t, n_pos=0, n_neg=0, n_pos_clusters=0, n_neg_clusters=0,
                                                z_threshold=float("inf")) if isinstance(t, ThresholdResult) else t
                            for t in c.thresholds),
        clusters=c.clusters.iloc[:0], recovery=None)
    res = dataclasses.replace(sim_results, contrasts={c.name: empty})
    prose = report.results_text(res)
    assert prose.startswith("For *listening*, no voxel survived") and "no evidence" in prose
    assert "found no z cut-off" in prose and "undefined" not in prose and "((" not in prose
    assert np.isfinite(c.z_max)


def test_dmn_prose_follows_the_data_planted_and_null(sim_results, tmp_path):
    """The simulated run with a planted DMN deactivation is reported as deactivated; without one, it is not."""
    from conftest import write_config

    planted = sim_results.dmn.result
    assert planted.deactivated and planted.network.p < 0.05
    prose = report.dmn_text(sim_results)
    assert "mean signal showed listening < rest" in prose and "no evidence of a DMN deactivation" not in prose
    assert "as a whole" not in prose

    null_cfg = write_config(tmp_path, simulation={"dmn_psc": 0.0}, calibration={"enabled": False},
                            dmn={"seed_map": False})
    null = run(null_cfg)
    result = null.dmn.result
    print(f"\nDMN network test: planted p = {planted.network.p:.2g} (effect {planted.network.effect:.3f} %), "
          f"null p = {result.network.p:.2g} (effect {result.network.effect:.3f} %)")
    assert not result.deactivated
    null_prose = report.dmn_text(null)
    assert "no evidence of a DMN deactivation" in null_prose
    assert "mean signal showed listening < rest" not in null_prose


def test_results_and_dmn_chapters_agree_at_every_threshold(sim_results):
    """The DMN chapter counts on the results chapter's thresholded maps: same voxels at every threshold."""
    c = sim_results.contrast()
    info = sim_results.dmn
    overlaps = {o.key: o for o in info.overlaps}
    assert list(overlaps) == [t.key for t in c.thresholds]
    for t in c.thresholds:
        print(f"\n{t.label}: results {t.n_neg} voxels with {c.negative_direction}; DMN chapter "
              f"{overlaps[t.key].n_below} ({overlaps[t.key].n_overlap} in the DMN)", end="")
        assert overlaps[t.key].n_below == t.n_neg
    d = info.result
    assert d.overlap.n_suprathreshold == c.primary.n_neg and info.threshold_label == c.primary.label
    assert d.seed.threshold_label == c.primary.label  # the seed map gets the same procedure, named
    prose = report.dmn_text(sim_results)
    assert c.primary.label in prose and "were deactivated" not in prose


def test_pure_noise_gets_no_fallback_threshold_and_no_deactivation_claim(tmp_path):
    """No planted effect at all: FDR finds no cut-off; the DMN chapter says so instead of falling back to p < .001."""
    from conftest import write_config

    res = run(write_config(tmp_path, simulation={"auditory_psc": 0.0, "dmn_psc": 0.0},
                           calibration={"enabled": False}, dmn={"seed_map": False}))
    c = res.contrast()
    info = res.dmn
    print(f"\npure noise: primary {c.primary.label} cut-off {c.primary.threshold_text}; "
          f"DMN overlap at {info.threshold_label}: {info.overlaps[3].n_below} voxels")
    assert not c.primary.has_cutoff and not c.primary.survived
    assert info.threshold_key == c.primary_key and not info.has_cutoff
    prose = report.dmn_text(res)
    assert "p < 0.001" not in prose and "deactivated" not in prose
    assert "found no z cut-off" in prose and "no voxel of the map showed listening < rest" in prose


def test_peak_outside_labelled_tissue_says_nearest_label_and_distance(sim_results):
    """The simulation's right auditory peak lies in white matter: table and prose name the nearest label."""
    from analysis import tables

    c = sim_results.contrast()
    peaks = c.peaks()
    off = peaks[peaks["Label distance (mm)"] > 0]
    assert len(off), peaks[["X", "Y", "Z", "Label", "Label distance (mm)"]]
    shown = tables.clusters(c, "+")
    prose = report.results_text(sim_results)
    for _, row in off.iterrows():
        expected = f"nearest: {row['Label']}, {row['Label distance (mm)']:.1f} mm"
        print(f"\npeak {text.fmt_mni((row['X'], row['Y'], row['Z']))}: {expected}")
        assert expected in set(shown["Harvard-Oxford label"])
        assert f"({expected})" in prose
    exact = peaks[peaks["Label distance (mm)"] == 0]
    for lab in exact["Label"]:
        assert f"in {lab}" in prose
