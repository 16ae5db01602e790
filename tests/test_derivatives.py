"""The output folder is a BIDS derivatives dataset that pybids indexes, with entities in every name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.derivatives import PYBIDS_CONFIG, RunEntities, bids_name


def test_names_follow_the_bids_entity_order():
    ent = RunEntities(sub="01", task="auditory", run="2", space="MNI152NLin2009aSym")
    assert bids_name(ent, "statmap", ".nii.gz", desc="fdr", stat="z", contrast="listening") == \
        "sub-01_task-auditory_run-2_space-MNI152NLin2009aSym_contrast-listening_stat-z_desc-fdr_statmap.nii.gz"
    assert bids_name(ent.with_space("native"), "bold", ".nii.gz", desc="mean") == "sub-01_task-auditory_run-2_desc-mean_bold.nii.gz"
    assert ent.folder == "derivatives/sub-01/func"
    with pytest.raises(ValueError, match="letters and digits"):
        bids_name(ent, "statmap", ".nii.gz", contrast="a_b")


def test_pybids_finds_every_map_with_its_entities(sim_results):
    bids = pytest.importorskip("bids")
    root = Path(sim_results.output_dir) / "derivatives"
    description = json.loads((root / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Version"]

    layout = bids.BIDSLayout(root, config=["bids", "derivatives", str(PYBIDS_CONFIG)], validate=False)
    maps = sorted(root.rglob("*.nii.gz"))
    assert len(maps) >= 15
    indexed = {Path(f.path).resolve(): f for f in layout.get(extension=".nii.gz")}
    assert set(indexed) == {p.resolve() for p in maps}  # pybids finds every one
    c = sim_results.contrast()
    space = sim_results.dataset.space
    for path in maps:
        ents = indexed[path.resolve()].get_entities()
        assert ents["subject"] == "01" and ents["task"] == "auditory", path.name
        assert ents["space"] == space, path.name
        sidecar = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
        assert sidecar.get("Space") == space, path.name  # every image has its sidecar, with the true space
    z = layout.get(contrast=c.entity, stat="z", suffix="statmap", extension=".nii.gz", desc=None)
    assert [Path(f.path).name for f in z] == [Path(c.files["z"]).name]
    from analysis.contrasts import entity

    for t in c.thresholds:  # one map per threshold of the results chapter, the primary one among them
        found = layout.get(contrast=c.entity, stat="z", suffix="statmap", extension=".nii.gz", desc=entity(t.key))
        assert [f.path for f in found] == [str(Path(sim_results.path(c.files[f"thresholded.{t.key}"])))]
    assert layout.get(desc="dmn", suffix="mask", extension=".nii.gz")


def test_tables_and_figures_carry_the_entities_too(sim_results):
    for rel in [*sim_results.figures.values(), *(c.files["clusters"] for c in sim_results.contrasts.values())]:
        assert Path(rel).name.startswith("sub-01_task-auditory_"), rel
