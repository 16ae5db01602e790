"""The real dataset's code path, offline: fetch_spm_auditory finds a MoAEpilot folder laid out as nilearn stores it.

The images are the project's native-space simulation (scanner space, head motion), so this is also the report
of native-space data without preprocessing: no MNI labels, no DMN analysis, and the prose says why.
"""

import nibabel as nib
import pytest

from analysis import report, run
from conftest import write_config


@pytest.fixture(scope="module")
def spm_results(tmp_path_factory):
    from native_sim import simulate_native_run

    nr = simulate_native_run()
    data_dir = tmp_path_factory.mktemp("nilearn_data")
    sub = data_dir / "spm_auditory" / "MoAEpilot" / "sub-01"
    (sub / "func").mkdir(parents=True)
    (sub / "anat").mkdir(parents=True)
    bold = nib.Nifti1Image(nr.bold_img.get_fdata(dtype="float32"), nr.bold_img.affine)
    bold.header.set_xyzt_units("mm", "sec")
    bold.header.set_zooms(bold.header.get_zooms()[:3] + (7.0,))
    nib.save(bold, sub / "func" / "sub-01_task-auditory_bold.nii")
    nib.save(nr.anat_img, sub / "anat" / "sub-01_T1w.nii")
    nr.events.to_csv(sub / "func" / "sub-01_task-auditory_events.tsv", sep="\t", index=False)
    cfg = write_config(tmp_path_factory.mktemp("spm_out"))
    text = cfg.read_text().replace('dataset = "simulated"', f'dataset = "spm_auditory"\ndata_dir = "{data_dir}"\n'
                                                            'fallback_to_simulated = false')
    text += ('[glm]\nt_r = 7.0\n\n[preprocessing]\nmode = "off"\n\n[calibration]\nn_null = 2\n'
             'reference_model = ""\n')
    cfg.write_text(text)
    return run(cfg)


def test_fetcher_path_loads_the_run_in_native_space(spm_results):
    ds = spm_results.dataset
    assert ds.dataset == "spm_auditory" and not ds.is_simulated and not ds.fallback_reason
    assert ds.space == "native" and ds.n_scans == 84 and ds.t_r == 7.0 and "fetch_spm_auditory" in ds.t_r_source
    assert {"sub-01_task-auditory_bold.nii", "sub-01_T1w.nii"} <= set(ds.files)


def test_native_space_report_gives_no_mni_labels_and_no_dmn_claims(spm_results):
    c = spm_results.contrast()
    assert c.primary.n_pos > 0  # the planted auditory response is found in scanner space
    assert "Label" not in c.clusters.columns or set(c.clusters["Label"]) <= {"n/a (native space)"}
    prose = report.results_text(spm_results)
    assert "not MNI space, so no atlas labels are given" in prose
    dmn = spm_results.dmn.result
    assert not dmn.applicable
    assert "was not run" in report.dmn_text(spm_results)
    methods = report.methods(spm_results)
    assert "native space without normalisation" in methods and "[@spm_auditory]" in methods
