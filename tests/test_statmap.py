"""A report from an existing statistical map: t-to-z conversion, MNI checks, the statmap profile's chapters."""

import os

import nibabel as nib
import numpy as np
import pytest
from scipy import stats

from analysis import run
from analysis.data import DataError
from analysis.statmap import t_to_z
from conftest import PROJECT, write_config


def test_t_to_z_matches_scipy_and_keeps_the_tails():
    t = np.array([-6.0, -2.5, -0.3, 0.0, 1.0, 3.1, 8.0])
    for dof in (5, 30, 71):
        expected = np.sign(t) * stats.norm.isf(stats.t.sf(np.abs(t), dof))
        assert np.allclose(t_to_z(t, dof), expected, atol=1e-9)
    extreme = t_to_z(np.array([60.0, -60.0]), 71)  # sf underflows double precision here
    assert np.all(np.isfinite(extreme)) and extreme[0] > 10 and extreme[1] == -extreme[0]


def _statmap_config(folder, path, **statmap):
    cfg = write_config(folder)
    text = cfg.read_text().replace('dataset = "simulated"', 'dataset = "statmap"')
    items = {"path": str(path), **statmap}
    text += "[statmap]\n" + "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in items.items())
    cfg.write_text(text)
    return cfg


OUTSIDE = (slice(0, 6), slice(0, 6), slice(0, 6))  # a corner of the 3 mm grid, far outside the MNI brain


def _spm_t_map(sim_results, path, dof=71.0):
    """The session's z map as an SPM t map: t values, ``SPM{T_[dof]}`` in the header, and a block of strong
    "signal" outside the brain, as maps made elsewhere often have."""
    z_img = nib.load(sim_results.path(sim_results.contrast().files["z"]))
    z = np.asarray(z_img.dataobj, dtype=np.float64)
    t = np.sign(z) * stats.t.isf(stats.norm.sf(np.abs(z)), dof)
    t[OUTSIDE] = 12.0
    header = nib.Nifti1Header()
    header["descrip"] = f"SPM{{T_[{dof:.1f}]}} - contrast 1: listening".encode()
    nib.save(nib.Nifti1Image(t.astype(np.float32), z_img.affine, header), path)
    return z


@pytest.fixture(scope="module")
def t_map_results(sim_results, tmp_path_factory):
    """The session's z map turned into an SPM t map with 71 dof (read from its header), reported from the map alone."""
    folder = tmp_path_factory.mktemp("tmap")
    path = folder / "spmT_0001.nii"
    z = _spm_t_map(sim_results, path)
    cfg = _statmap_config(folder / "out", path, stat="t", contrast="listening",
                          direction="listening > rest", source="SPM12 first level (test)")
    return run(cfg), z, cfg


def test_t_map_is_converted_and_gives_the_same_clusters(t_map_results, sim_results):
    res, z, _ = t_map_results
    z_back = np.asarray(nib.load(res.path(res.contrast().files["z"])).dataobj)
    inside = z_back != 0  # the statistical map's own brain mask (MNI152 brain inside the map)
    assert inside.sum() > 50_000 and np.allclose(z_back[inside], z[inside], atol=1e-3)
    assert (z_back[OUTSIDE] == 0).all()
    ours, theirs = res.contrast(), sim_results.contrast()
    assert ours.primary.n_pos == theirs.primary.n_pos
    assert list(ours.peaks()["X"]) == list(theirs.peaks()["X"])
    assert res.model is None and res.dataset.n_scans == 0
    assert res.statmap.stat == "t" and res.statmap.dof == 71
    assert "71 degrees of freedom (read from the header's description field, SPM{T_[71.0]})" in \
        res.statmap.conversion
    assert res.dmn_overlap.available


def test_statmap_table_lists_no_cluster_outside_the_mask_and_agrees_with_the_prose(t_map_results):
    """Suprathreshold values outside the brain reach neither the thresholds nor the table nor the prose."""
    from analysis import report, text

    res, _, _ = t_map_results
    c = res.contrast()
    mains = c.peaks()
    brain = np.asarray(nib.load(res.path(c.files["z_thresholded"])).dataobj) != 0
    labels = np.asarray(nib.load(res.path(c.files["clusters_img"])).dataobj)
    assert not labels[OUTSIDE].any() and ((labels > 0) == brain).all()
    for _, row in mains.iterrows():
        assert not (row["X"] < -60 and row["Y"] < -100 and row["Z"] < -50)  # nothing from the corner block
    p = c.primary
    assert mains[mains["Sign"] == "+"]["Cluster Size (voxels)"].sum() == p.n_pos
    assert mains[mains["Sign"] == "\u2212"]["Cluster Size (voxels)"].sum() == p.n_neg
    assert len(mains[mains["Sign"] == "+"]) == p.n_pos_clusters
    prose = report.results_text(res)
    assert text.fmt_k(p.n_pos) in prose and f"{p.n_pos_clusters} cluster" in prose


def test_spm_header_dof_is_read_and_a_disagreeing_config_is_refused(sim_results, tmp_path):
    path = tmp_path / "spmT_0001.nii"
    _spm_t_map(sim_results, path, dof=73.0)
    with pytest.raises(DataError, match=r"the header gives 73 degrees of freedom \(SPM\{T_\[73.0\]\}\) but "
                                        r"statmap.dof = 71 in the config; set statmap.dof = 73"):
        run(_statmap_config(tmp_path / "a", path, stat="t", dof=71.0))
    with pytest.raises(DataError, match="header says this is an SPM t map"):
        run(_statmap_config(tmp_path / "b", path, stat="z"))
    from analysis.statmap import header_dof

    assert header_dof(nib.load(path)) == ("t", 73.0, "SPM{T_[73.0]} - contrast 1: listening")


def test_map_outside_mni_is_refused(tmp_path):
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = [500.0, 500.0, 500.0]  # scanner coordinates nowhere near the MNI brain
    data = np.random.default_rng(0).standard_normal((64, 64, 40)).astype(np.float32)
    path = tmp_path / "zstat1.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    with pytest.raises(DataError, match=r"zstat1.nii.gz: the map covers only 0 % of the MNI152 brain"):
        run(_statmap_config(tmp_path / "out", path))


def test_t_map_without_dof_and_4d_map_are_refused(tmp_path, sim_results):
    z_img = nib.load(sim_results.path(sim_results.contrast().files["z"]))
    with pytest.raises(DataError, match="needs statmap.dof"):
        run(_statmap_config(tmp_path / "a", sim_results.path(sim_results.contrast().files["z"]), stat="t"))
    four = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([z_img.get_fdata()] * 2, axis=-1), z_img.affine), four)
    with pytest.raises(DataError, match="a 3D statistical map is needed"):
        run(_statmap_config(tmp_path / "b", four))


def test_statmap_profile_chapters_execute(t_map_results):
    from book_sources import book_chapters, expand_chapter, labels_in, refs_in, visible_text

    _, _, cfg = t_map_results
    chapters = book_chapters(PROJECT, profile="statmap")
    names = [p.name for p in chapters]
    assert "01-data.qmd" not in names and "04-calibration.qmd" not in names and "02-source.qmd" in names
    os.environ["ANALYSIS_CONFIG"] = str(cfg)
    try:
        done = [expand_chapter(p, PROJECT) for p in chapters]
    finally:
        os.environ.pop("ANALYSIS_CONFIG")
    text = "\n".join(visible_text(ch.source, "statmap") + "\n".join(ch.outputs) for ch in done)
    assert not refs_in(text) - labels_in(text)
    prose = "\n".join(o for ch in done for o in ch.outputs)
    assert "SPM12 first level (test)" in prose and "71 degrees of freedom" in prose
    assert "@tbl-dmn-overlap" in prose
    assert "no claim of DMN deactivation" in prose
