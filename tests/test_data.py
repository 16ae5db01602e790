import nibabel as nib
import numpy as np
import pytest

from analysis.data import DataError, check_bold, check_events


def test_events_are_validated_and_sorted(events):
    out = check_events(events.iloc[::-1], 84, 7.0, "ev.tsv")
    assert list(out["onset"]) == sorted(events["onset"])


@pytest.mark.parametrize("mutate, match", [
    (lambda e: e.drop(columns="trial_type"), "lacks column"),
    (lambda e: e.assign(duration=-1.0), "negative durations"),
    (lambda e: e.assign(onset=e["onset"] * 10), "after the end of the scan"),
    (lambda e: e.iloc[:0], "no events"),
])
def test_bad_events_name_the_file(events, mutate, match):
    with pytest.raises(DataError, match=match) as exc:
        check_events(mutate(events), 84, 7.0, "sub-01_events.tsv")
    assert str(exc.value).startswith("sub-01_events.tsv")


def test_3d_image_is_refused(affine):
    img = nib.Nifti1Image(np.zeros((4, 5, 6), dtype=np.float32), affine)
    with pytest.raises(DataError, match="a 4D functional run is needed"):
        check_bold(img, "anat.nii")


def test_simulated_run_loads_with_truth(tmp_path):
    from analysis.config import Config
    from analysis.data import load_run

    cfg = Config.model_validate({"data": {"dataset": "simulated"}, "output": {"dir": str(tmp_path)}})
    run = load_run(cfg, cache_dir=tmp_path / "cache")
    assert run.is_simulated and not run.is_fallback and run.truth is not None
    assert run.bold_img.shape[3] == 84 and run.space.startswith("MNI")
    assert set(run.events["trial_type"]) == {"listening"}


def test_unfetchable_real_data_falls_back_or_errors(tmp_path, monkeypatch):
    import analysis.data as data
    from analysis.config import Config

    def no_network(config):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(data, "_load_spm_auditory", no_network)
    cfg = Config.model_validate({"output": {"dir": str(tmp_path)}})
    run = data.load_run(cfg, cache_dir=tmp_path / "cache")
    assert run.is_simulated and "could not be fetched" in run.fallback_reason
    strict = cfg.replace(data={"fallback_to_simulated": False})
    with pytest.raises(DataError, match="could not be fetched"):
        data.load_run(strict, cache_dir=tmp_path / "cache")


def test_read_bold_reads_the_file_once_into_one_matrix(tmp_path, bold_img, events):
    """One pass over the compressed file: the in-mask matrix, the excluded voxels, summaries and the file's hash."""
    from analysis import data

    arr = np.asarray(bold_img.dataobj, dtype=np.float32).copy()
    arr[0, 0, 0, 5] = np.nan
    arr[1, 1, 1, :] = 100.0
    path = tmp_path / "bold.nii.gz"
    nib.save(nib.Nifti1Image(arr, bold_img.affine), path)
    mask = np.ones(arr.shape[:3], np.uint8)
    mask[6, 7, 8] = 0
    run = data.Run(bold_img=nib.load(path), events=events, t_r=7.0, dataset="bids", space="MNI152NLin2009cAsym",
                   mask_img=nib.Nifti1Image(mask, bold_img.affine), files={"bold.nii.gz": str(path)})
    m = data.read_bold(run)
    keep = mask.astype(bool)
    keep[0, 0, 0] = keep[1, 1, 1] = False
    assert (m.mask_report.n_nonfinite, m.mask_report.n_constant) == (1, 1)
    assert np.array_equal(m.mask, keep) and np.array_equal(m.data, arr[keep])
    assert m.file_sha256 == {str(path.resolve()): data.file_sha256(path)}
    assert m.value_max == np.nanmax(arr) and np.array_equal(m.first_volumes, arr[..., :4])
    raw = m.raw_series(np.arange(5))
    m.scale_in_place()
    mean = arr[keep].astype(np.float64).mean(axis=1, keepdims=True)
    np.testing.assert_allclose(m.data, 100 * (arr[keep] / mean - 1), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(m.raw_series(np.arange(5)), raw, rtol=1e-6)
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    run = data.Run(bold_img=nib.load(truncated), events=events, t_r=7.0, dataset="bids", space="MNI152NLin2009cAsym",
                   mask_img=nib.Nifti1Image(mask, bold_img.affine), files={"bold.nii.gz": str(truncated)})
    with pytest.raises(data.DataError, match="truncated.nii.gz: not a readable NIfTI image"):
        data.read_bold(run)
