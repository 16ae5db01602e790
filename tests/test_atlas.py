"""Tests for analysis.atlas: labels of known coordinates, region shares, fetch status, comparison table."""

from __future__ import annotations


import nibabel as nib
import numpy as np
import pytest
from conftest import atlas_dir

from analysis import atlas

MNI = "MNI152NLin2009cAsym"


DATA_DIR = atlas_dir("fsl")
needs_atlases = pytest.mark.skipif(DATA_DIR is None, reason="atlas folder not found: set NILEARN_DATA or "
                                                            "provide ../shared/nilearn_data")


@pytest.fixture(scope="module")
def ho():
    if DATA_DIR is None:
        pytest.skip("atlas folder not found (NILEARN_DATA or ../shared/nilearn_data)")
    return atlas.load_label_atlases(DATA_DIR)


@needs_atlases
def test_known_coordinates_get_the_right_labels(ho):
    table = atlas.label_coordinates([(-42, -22, 8), (0, -50, 28), (-20, -20, 10), (26, -30, 30)], ho, MNI)
    assert "Heschl" in table.loc[0, "Label"] and table.loc[0, "Label"].startswith("Left")
    assert "Cingulate Gyrus, posterior" in table.loc[1, "Label"]
    assert table.loc[2, "Label"] == "Left Thalamus"  # subcortical where the cortical atlas has none
    assert "White Matter" in table.loc[3, "Label"]
    assert "Cortex" not in table.loc[2, "Harvard-Oxford cortical"]


@needs_atlases
def test_native_space_gives_no_mni_labels(ho):
    table = atlas.label_coordinates([(-42, -22, 8)], ho, space="native")
    assert (table[["Label", "Harvard-Oxford cortical", "Harvard-Oxford subcortical"]] == atlas.NATIVE_LABEL).all(
        axis=None)
    assert "native" in atlas.label_caption(None, "native")


def _cluster_table_and_maps():
    """A z map on a 3 mm MNI grid with one positive cluster in left Heschl's gyrus and a negative one in PCC."""
    from nilearn.reporting import get_clusters_table

    affine = np.array([[3.0, 0, 0, -90], [0, 3, 0, -126], [0, 0, 3, -72], [0, 0, 0, 1]])
    data = np.zeros((61, 73, 61))
    ijk = lambda xyz: np.rint(np.linalg.inv(affine) @ np.r_[xyz, 1])[:3].astype(int)  # noqa: E731
    i, j, k = ijk((-42, -22, 8))
    data[i - 1:i + 2, j - 1:j + 2, k - 1:k + 2] = 4.0
    data[i, j, k] = 6.0
    i, j, k = ijk((0, -53, 28))
    data[i - 1:i + 2, j - 2:j + 3, k - 1:k + 2] = -4.5
    data[i, j, k] = -5.0
    img = nib.Nifti1Image(data, affine)
    table, maps = get_clusters_table(img, 3.0, cluster_threshold=5, two_sided=True, return_label_maps=True)
    return img, table, maps


@needs_atlases
def test_cluster_table_is_labelled_with_region_shares(ho):
    img, table, maps = _cluster_table_and_maps()
    out = atlas.label_cluster_table(table, maps, ho, MNI)
    assert len(out) == len(table)
    main = out[out["Cluster ID"].astype(str).str.fullmatch(r"\d+")]
    pos = main[main["Peak Stat"] > 0].iloc[0]
    neg = main[main["Peak Stat"] < 0].iloc[0]
    assert "Heschl" in pos["Label"] and "Heschl" in pos["Regions"]
    assert "Cingulate" in neg["Top Region"]
    assert 0 < pos["Top Region Share"] <= 1
    assert not out.attrs  # the caption travels in the results (Results.atlas), not in the table
    assert "Harvard-Oxford" in atlas.label_caption(ho, MNI)


@needs_atlases
def test_region_shares_sum_to_one(ho):
    img, table, maps = _cluster_table_and_maps()
    shares = atlas.region_shares(maps[0], ho, MNI, stat_img=img)
    for _, group in shares.groupby("Cluster ID"):
        assert group["Share"].sum() == pytest.approx(1.0)
    assert "Mean Stat" in shares


@needs_atlases
def test_cluster_table_in_native_space_has_no_labels(ho):
    img, table, maps = _cluster_table_and_maps()
    out = atlas.label_cluster_table(table, maps, ho, space="native")
    assert set(out["Label"]) == {atlas.NATIVE_LABEL}
    assert set(out.loc[out["Top Region"].notna(), "Top Region"]) == {atlas.NATIVE_LABEL}


def test_missing_atlas_is_marked_unavailable_not_raised(tmp_path):
    missing = atlas.fetch_atlas("harvard_oxford_cort", tmp_path / "empty", download=False)
    assert not missing.available and "not found" in missing.status.reason
    table = atlas.label_coordinates([(-42, -22, 8)], {"harvard_oxford_cort": missing}, MNI)
    assert table.loc[0, "Harvard-Oxford cortical"].startswith("unavailable")
    assert atlas.unavailable_atlases({"harvard_oxford_cort": missing}) == {
        "Harvard-Oxford cortical": missing.status.reason}


def test_offline_download_fails_fast_with_a_reason(tmp_path):
    got = atlas.fetch_atlas("msdl", tmp_path / "data", download_dir=tmp_path / "dl", budget=30)
    if got.available:
        pytest.skip("MSDL could be downloaded here (network available)")
    assert got.status.reason and got.status.attempt.seconds < 30
    assert not any((tmp_path / "data").glob("*"))  # nothing written to the data folder


@needs_atlases
def test_comparison_table_reports_each_atlas_from_real_fetches(tmp_path):
    table = atlas.atlas_comparison_table(data_dir=DATA_DIR, download_dir=tmp_path, budget=30)
    assert list(table["Atlas"]) == ["DiFuMo", "Schaefer 2018", "Harvard-Oxford cortical",
                                    "Harvard-Oxford subcortical", "Yeo 2011", "MSDL", "Seitzman 2020"]
    loaded = dict(zip(table["Atlas"], table["Loaded"]))
    assert loaded["Yeo 2011"] and loaded["Schaefer 2018"] and loaded["Seitzman 2020"]
    assert set(table["Type"]) == {"probabilistic", "deterministic", "coordinates"}
    for _, row in table.iterrows():
        assert (row["Status"] == "loaded") == row["Loaded"]
        if not row["Loaded"]:
            assert row["Status"].startswith("not available: ")
    assert table.loc[table["Atlas"] == "Schaefer 2018", "Regions"].item() == "400 parcels"


@needs_atlases
def test_status_round_trips_through_json():
    from analysis import serial

    st = atlas.fetch_atlas("yeo_2011", DATA_DIR).status
    assert serial.from_json(atlas.AtlasStatus, serial.to_json(st)) == st


@needs_atlases
def test_nilearn_data_env_var_is_honoured(monkeypatch):
    monkeypatch.setenv("NILEARN_DATA", str(DATA_DIR))
    monkeypatch.delenv("NILEARN_SHARED_DATA", raising=False)
    assert atlas.fetch_atlas("harvard_oxford_sub", None).available
