"""Random-field inference in the report: smoothness from the fitted model, the sixth threshold, SPM's columns of the
cluster table, the prose, and the statistical-map mode (smoothness given by the user, or RFT not available)."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pytest

from analysis import report, rft, run, tables, text
from analysis.config import ConfigError
from conftest import write_config

LABEL = "cluster-level FWE p < 0.05 (CDT p < 0.001)"


@pytest.fixture(scope="module")
def fwe_results(tmp_path_factory):
    """The simulated dataset with the cluster-level FWE map as the primary threshold."""
    return run(write_config(tmp_path_factory.mktemp("fwe"), inference={"primary": "cluster_fwe"}))


def _truth():
    from analysis.simulate import simulate_run

    return simulate_run(seed=0, n_scans=4).truth  # the regions depend on the seed, not on the run length


def test_smoothness_and_resels_come_from_the_fitted_model(sim_results):
    inf = report.rft(sim_results)
    sm = inf.smoothness
    assert sm.source == "residuals" and sm.method == "spm" and sm.dof == sim_results.model.dof
    assert sm.n_voxels == sim_results.model.n_mask_voxels
    assert all(0.5 < f < 3 for f in sm.fwhm_vox)  # the simulated noise is rough: ~1 voxel
    assert sm.resels[3] == pytest.approx(sm.resels[3]) and sm.resels[3] < sm.n_voxels * sm.rpv
    assert inf.dof == sim_results.model.dof and inf.two_sided
    assert inf.voxel.z_threshold == min(inf.voxel.z_rft, inf.voxel.z_bonferroni)
    c = sim_results.contrast()
    fwe = c.threshold("cluster_fwe")
    assert fwe.label == LABEL and fwe.spec.cluster_threshold == inf.cluster_extent
    assert fwe.z_threshold == pytest.approx(c.threshold("fpr").z_threshold)  # the CDT is the p < 0.001 map's cut-off


def test_methods_state_the_inference_with_numbers_from_the_results(sim_results):
    inf = report.rft(sim_results)
    methods = report.methods(sim_results)
    fwhm = " × ".join(text.fmt_num(v, 1) for v in inf.smoothness.fwhm_mm)
    assert f"{fwhm} mm FWHM" in methods
    assert f"{text.fmt_num(inf.smoothness.search_resels, 0)} resels" in methods
    assert f"|z| > {text.fmt_z(inf.voxel.z_threshold)}" in methods
    assert f"the {'Bonferroni' if inf.voxel.method == 'Bonferroni' else 'random-field'} threshold, which was lower" \
        in methods
    assert "Clusters were defined at p < 0.001 uncorrected" in methods
    assert "reported at p < 0.05 FWE-corrected at the cluster level" in methods
    assert f"at least {text.fmt_k(inf.cluster_extent)}" in methods
    for key in ("@kiebel1999", "@worsley1996", "@friston1994"):
        assert key in methods
    assert "in six ways side by side" in methods and LABEL in methods


def test_cluster_table_has_spm_columns(sim_results):
    c = sim_results.contrast()
    t = c.clusters
    for col in rft.RFT_CLUSTER_COLUMNS:
        assert col in t.columns
    main = t[t["Cluster ID"].str.fullmatch(r"\d+")]
    subs = t[~t["Cluster ID"].str.fullmatch(r"\d+")]
    assert main["Cluster p(FWE)"].notna().all() and subs["Cluster p(FWE)"].isna().all()
    assert (main["Cluster p(FWE)"] >= main["Cluster p(unc)"]).all()
    assert (t["Peak p(FWE)"] >= t["Peak p"]).all() and (t["Peak q(FDR)"] >= t["Peak p"] - 1e-12).all()
    shown = tables.clusters(c, "+")
    for col in ("Peak p(FWE)", "Peak q(FDR)", "Cluster p(FWE)", "Cluster p(unc)"):
        assert col in shown.columns
    assert len(shown.columns) == 12  # as the chapter's tbl-colwidths


def test_both_planted_auditory_clusters_survive_cluster_level_fwe(fwe_results):
    c = fwe_results.contrast()
    assert c.primary_key == "cluster_fwe" and c.primary.label == LABEL and c.primary.survived
    truth = _truth()
    aud = np.asarray(truth.auditory_mask_img.dataobj) > 0
    labels = np.asarray(nib.load(fwe_results.path(c.files["clusters_img"])).dataobj)
    main = c.peaks("+")
    assert (main["Cluster p(FWE)"] < 0.05).all()  # every listed cluster is significant, as the map says
    hemis = set()
    for _, row in main.iterrows():
        in_cluster = labels == int(row["Cluster ID"])
        assert in_cluster.sum() == row["Cluster Size (voxels)"] >= c.primary.spec.cluster_threshold
        if (in_cluster & aud).sum() > 0.5 * in_cluster.sum() and row["Cluster Size (voxels)"] > 50:
            hemis.add("right" if row["X"] > 0 else "left")
    assert hemis == {"left", "right"}
    assert (c.peaks("-")["Cluster p(FWE)"] < 0.05).all()


def test_prose_table_and_panel_agree_on_every_count(fwe_results, sim_results):
    for res in (fwe_results, sim_results):
        c = res.contrast()
        fwe = c.threshold("cluster_fwe")
        row = tables.thresholds(c).set_index("Threshold").loc[fwe.label + (" (primary)" if c.primary_key ==
                                                                            "cluster_fwe" else "")]
        assert row["Clusters +"] == f"{fwe.n_pos_clusters:,}" and row["Voxels +"] == f"{fwe.n_pos:,}"
        assert row["Clusters \u2212"] == f"{fwe.n_neg_clusters:,}"
        prose = report.results_text(res)
        if c.primary_key == "cluster_fwe":  # the table lists exactly the clusters the map and the prose count
            assert len(c.peaks("+")) == fwe.n_pos_clusters and len(c.peaks("-")) == fwe.n_neg_clusters
            assert f"{text.fmt_k(fwe.n_pos)} showed" in prose and f"in {fwe.n_pos_clusters} clusters" in prose
            listed = re.findall(r"cluster (\d+) \(([\d,]+) voxels\), peak z = [^;]*?, cluster-level FWE-corrected "
                                r"(p [<=] (?:\.\d{3}|1))", prose)
            assert len(listed) == min(3, fwe.n_pos_clusters)  # the prose lists the three largest
            rows = c.peaks("+").set_index("Cluster ID")
            for cid, k, p in listed:
                assert text.fmt_k(rows.loc[cid, "Cluster Size (voxels)"]) == f"{k} voxels"
                assert text.fmt_p(rows.loc[cid, "Cluster p(FWE)"]) == p
        else:
            assert f"At {LABEL}" in prose and f"{fwe.n_pos_clusters} cluster" in prose
            assert f"of at least {text.fmt_k(fwe.spec.cluster_threshold)}" in prose
    # the panel is drawn from the same ThresholdResults: its title strings are the table's labels
    assert any(f.endswith("desc-thresholds_statmap.png") for f in fwe_results.figures.values())


def _statmap(sim_results, folder, **statmap):
    from test_statmap import _spm_t_map, _statmap_config

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spmT_0001.nii"
    _spm_t_map(sim_results, path)
    return _statmap_config(folder / "out", path, stat="t", contrast="listening", direction="listening > rest",
                           source="SPM12 first level (test)", **statmap)


def test_statmap_without_smoothness_says_rft_is_not_available(sim_results, tmp_path):
    res = run(_statmap(sim_results, tmp_path))
    assert report.rft(res) is None and res.rft is None and "no residuals" in res.rft_reason
    assert "cluster_fwe" not in [t.key for t in res.contrast().thresholds]
    prose = report.statmap_text(res)
    assert "Random-field (FWE) inference was not available" in prose and "statmap.fwhm" in prose
    assert "in five ways side by side" in prose
    assert (tables.clusters(res.contrast(), "+")["Cluster p(FWE)"] == "n/a").all()


def test_statmap_with_given_fwhm_or_fsl_file_gets_rft(sim_results, tmp_path):
    res = run(_statmap(sim_results, tmp_path / "a", fwhm=4.5))
    inf = report.rft(res)
    assert inf.smoothness.source == "fwhm" and inf.smoothness.fwhm_mm == pytest.approx((4.5, 4.5, 4.5))
    assert inf.dof == 71  # the t map's degrees of freedom
    prose = report.statmap_text(res)
    assert "given in the configuration as a FWHM" in prose and "4.5 × 4.5 × 4.5 mm FWHM" in prose
    assert "in six ways side by side" in prose
    fsl = tmp_path / "smoothness"
    fsl.write_text(f"DLH {rft.FOUR_LN2 ** 1.5 / 1.5 ** 3:.8f}\nVOLUME 70000\nRESELS 3.375\n")
    res = run(_statmap(sim_results, tmp_path / "b", smoothness_file=str(fsl)))
    inf2 = report.rft(res)
    assert inf2.smoothness.source == "fsl_smoothness"
    np.testing.assert_allclose(inf2.smoothness.fwhm_vox, 1.5, rtol=1e-6)
    assert inf2.cluster_extent == inf.cluster_extent


def test_cluster_fwe_primary_without_rft_is_a_config_error(sim_results, tmp_path):
    cfg = _statmap(sim_results, tmp_path)
    cfg.write_text(cfg.read_text() + '\n[inference]\nprimary = "cluster_fwe"\n')
    with pytest.raises(ConfigError, match="needs random-field inference"):
        run(cfg)
    cfg = _statmap(sim_results, tmp_path / "c", fwhm=4.0, rpv="RPV.nii")
    with pytest.raises(ConfigError, match="give the smoothness once"):
        run(cfg)


def test_every_citation_key_is_in_the_bibliography():
    from conftest import PROJECT

    bib = (PROJECT / "references.bib").read_text()
    for key in ("kiebel1999", "worsley1996", "friston1994"):
        assert re.search(r"@\w+\{" + key + ",", bib)
