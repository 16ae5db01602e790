import pytest

from analysis.config import Config, ConfigError, load_config


def test_defaults_are_the_reference_settings():
    cfg = Config()
    assert cfg.glm.t_r == 0.0  # taken from the data (and checked when set)
    assert cfg.glm.hrf_model == "spm" and cfg.glm.drift_model == "cosine" and cfg.glm.noise_model == "ar1_bc"
    assert cfg.glm.high_pass == 0.01 and cfg.glm.standardize is False
    assert cfg.contrasts == {"listening": "listening"}


def test_project_config_file_loads():
    from conftest import PROJECT

    cfg = load_config(PROJECT / "analysis.toml")
    assert cfg.data.dataset == "spm_auditory" and cfg.glm.t_r == 7.0 and cfg.preprocessing.mode == "auto"


def test_unknown_key_names_closest_valid_key(tmp_path):
    p = tmp_path / "a.toml"
    p.write_text('[glm]\nnoise_modle = "ar1"\n')
    with pytest.raises(ConfigError, match=r"a.toml: unknown key 'glm.noise_modle'; did you mean 'glm.noise_model'"):
        load_config(p)


@pytest.mark.parametrize("text, match", [
    ('[glm]\nt_r = "7"\n', "glm.t_r must be a number"),
    ("[inference]\nalpha = 1.5\n", "inference.alpha = 1.5 is out of range"),
    ("[inference]\ntwo_sided = 1\n", "two_sided must be true or false"),
    ('[glm]\nhrf_model = "spn"\n', "did you mean 'spm'"),
    ("[contrasts]\n", r"\[contrasts\] is empty"),
    ('[contrasts]\nlistening = ""\n', "contrast 'listening' is empty"),
    ("[glm\n", "not valid TOML"),
])
def test_bad_values_give_one_line_errors(tmp_path, text, match):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match) as exc:
        load_config(p)
    assert "\n" not in str(exc.value) and str(p) in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_canonical_json_changes_with_any_value():
    a = Config()
    b = a.replace(glm={"high_pass": 0.008})
    assert a.canonical_json() != b.canonical_json()
    assert a.canonical_json() == Config().canonical_json()
