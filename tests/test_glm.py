import numpy as np
import pytest

from analysis import glm
from analysis.config import Config


GLM = Config().replace(glm={"t_r": 7.0})


def _design(events):
    return glm.make_design(events, 84, GLM.glm)


def test_design_has_condition_drifts_and_constant(events):
    d = _design(events)
    assert d.shape[0] == 84 and "listening" in d.columns and "constant" in d.columns
    assert sum(c.startswith("drift") for c in d.columns) == 11  # 588 s run, 0.01 Hz cosine basis


def test_unknown_condition_lists_valid_ones(events):
    with pytest.raises(glm.ContrastError, match=r"unknown condition\(s\) 'listenning'; valid conditions: 'listening'"):
        glm.check_contrast("listenning", _design(events), ["listening"], "listening")


def test_empty_and_null_contrasts_are_refused(events):
    d = _design(events)
    with pytest.raises(glm.ContrastError, match="is empty"):
        glm.check_contrast(" ", d, ["listening"], "x")
    with pytest.raises(glm.ContrastError, match="all-zero"):
        glm.check_contrast("listening - listening", d, ["listening"], "x")


def test_contrast_vector_comes_from_the_expression(events):
    d = _design(events)
    v = glm.contrast_vector("listening", d)
    assert v[list(d.columns).index("listening")] == 1 and v.sum() == 1


@pytest.mark.parametrize("expr, expected", [("listening", "listening > rest"), ("a - b", "a > b"),
                                            ("2*a - b - c", "2*a - b - c > 0")])
def test_direction_is_described(expr, expected):
    assert glm.describe_direction(expr, ["listening", "a", "b", "c"]) == expected


def test_entity_names_are_bids_safe():
    assert glm.entity("task_vs_rest") == "taskVsRest" and glm.entity("listening") == "listening"


@pytest.mark.parametrize("noise_model", ["ols", "ar1"])
def test_fit_recovers_planted_block(bold_img, events, noise_model):
    from conftest import CUBE

    cfg = GLM.replace(glm={"noise_model": noise_model})
    d = _design(events)
    import nibabel as nib

    mask = nib.Nifti1Image(np.ones(bold_img.shape[:3], np.uint8), bold_img.affine)
    model = glm.fit(bold_img, d, cfg.glm, mask_img=mask)
    maps = glm.compute_contrasts(model, d, {"listening": "listening"}, ["listening"])
    z = maps["listening"].z_img.get_fdata()
    inside = np.zeros(z.shape, bool)
    inside[CUBE] = True
    assert z[inside].min() > 5  # 3 % signal on noise sd 1 %
    assert np.abs(z[~inside]).mean() < 1.5
    eff = maps["listening"].effect_img.get_fdata()[inside]
    assert np.allclose(eff.mean(), 3.0, atol=0.5)  # signal_scaling=0: effect in % signal change
