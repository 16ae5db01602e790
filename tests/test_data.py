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

    cfg = Config.from_dict({"data": {"dataset": "simulated"}, "output": {"dir": str(tmp_path)}})
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
    cfg = Config.from_dict({"output": {"dir": str(tmp_path)}})
    run = data.load_run(cfg, cache_dir=tmp_path / "cache")
    assert run.is_simulated and "could not be fetched" in run.fallback_reason
    strict = cfg.replace(data={"fallback_to_simulated": False})
    with pytest.raises(DataError, match="could not be fetched"):
        data.load_run(strict, cache_dir=tmp_path / "cache")
