import json
import re

import pytest
from pydantic import ValidationError

from analysis.config import Config, ConfigError, load_config, read_config_file, validate_config


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


# ----------------------------------------------------------------------------- pydantic models

def _load(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p, load_config(p)


@pytest.mark.parametrize("text, message", [
    ('[glm]\nt_r = "7"\n', "glm.t_r must be a number, not '7'; write it without quotes, t_r = 7"),
    ('[inference]\nz_threshold = "3"\n', "inference.z_threshold must be a number, not '3'"),
    ('[inference]\ncluster_threshold = "10"\n', "inference.cluster_threshold must be a whole number, not '10'"),
    ("[inference]\ncluster_threshold = 10.0\n", "inference.cluster_threshold must be a whole number, not 10.0; "
                                                "write it without a decimal point"),
    ("[glm]\nsignal_scaling = true\n", "glm.signal_scaling must be a whole number, not true"),
    ('[calibration]\nenabled = "yes"\n', "calibration.enabled must be true or false, not 'yes'"),
    ("[output]\ndir = 3\n", "output.dir must be a string, not 3; put it in quotes"),
    ('[bids]\nconfounds = "trans_x"\n', 'bids.confounds must be a list of strings, e.g. confounds = ["trans_x", '),
    ('[bids]\nconfounds = ["trans_x", 1]\n', "bids.confounds: entry 2 must be a string, not 1"),
    ("[contrasts]\nlistening = 1\n", "contrasts.listening must be a string, not 1"),
    ("glm = 3\n", "[glm] must be a table"),
])
def test_a_wrong_type_is_refused_with_one_line_naming_file_and_key(tmp_path, text, message):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert str(exc.value).startswith(f"{p}: ") and message in str(exc.value), str(exc.value)
    assert "\n" not in str(exc.value) and "validation error" not in str(exc.value)


def test_an_int_is_accepted_for_a_float_and_stored_as_a_float(tmp_path):
    _, cfg = _load(tmp_path, "[glm]\nt_r = 7\n[inference]\nmin_distance = 8\n")
    assert cfg.glm.t_r == 7.0 and isinstance(cfg.glm.t_r, float) and isinstance(cfg.inference.min_distance, float)
    _, same = _load(tmp_path, "[glm]\nt_r = 7.0\n")
    assert cfg.canonical_json() == same.canonical_json()  # 7 and 7.0 are the same analysis


@pytest.mark.parametrize("text, message", [
    ("[inference]\nalpha = 0\n", "inference.alpha = 0 is out of range; use a value in (1e-12, 0.5]"),
    ("[inference]\nalpha = 0.5000001\n", "inference.alpha = 0.5000001 is out of range"),
    ("[simulation]\nrho = 0.96\n", "simulation.rho = 0.96 is out of range; use a value in [0, 0.95]"),
    ("[calibration]\nn_null = 51\n", "calibration.n_null = 51 is out of range; use a value in [0, 50]"),
    ("[glm]\nt_r = 0.05\n", "glm.t_r = 0.05 is out of range; use 0 (take it from the data) or a value in [0.1, 60]"),
    ("[glm]\nt_r = -inf\n", "glm.t_r = -inf is out of range"),
    ("[data]\nseed = -1\n", "data.seed = -1 is out of range; use a value >= 0"),
    ('[preprocessing]\nmode = "always"\n', "preprocessing.mode = 'always' is not valid; choose one of 'auto', 'on'"),
    ('[glm]\nnoise_model = "ar1bc"\n', "did you mean 'ar1_bc'?"),
    ('[dmn]\ncontrol_network = "DefaultMode"\n', "dmn.control_network = 'DefaultMode' is not valid"),
    ('[bids]\nraw_space = "talairach"\n', "bids.raw_space = 'talairach' is not valid"),
    ('[statmap]\nfwhm = 4\nrpv = "RPV.nii"\n', "give the smoothness once"),
])
def test_bounds_and_choices(tmp_path, text, message):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)) as exc:
        load_config(p)
    assert str(exc.value).startswith(f"{p}: ") and "\n" not in str(exc.value)


def test_bounds_are_inclusive_where_documented(tmp_path):
    _, cfg = _load(tmp_path, "[inference]\nalpha = 0.5\n[simulation]\nrho = 0.95\n[glm]\nt_r = 0\n")
    assert (cfg.inference.alpha, cfg.simulation.rho, cfg.glm.t_r) == (0.5, 0.95, 0.0)


@pytest.mark.parametrize("text, message", [
    ('[glm]\nnoise_modle = "ar1"\n', "unknown key 'glm.noise_modle'; did you mean 'glm.noise_model'?"),
    ("[inferense]\nalpha = 0.05\n", "unknown key 'inferense'; did you mean 'inference'?"),
    ('[reprot]\ntitle = "x"\n', "unknown key 'reprot'; did you mean 'report'?"),
    ("[glm]\nzzz = 1\n", "unknown key 'glm.zzz'; valid keys: t_r, hrf_model"),
    ('[[report.authors]]\nname = "A"\naffilation = "x"\n',
     "unknown key 'report.authors.affilation'; did you mean 'report.authors.affiliation'?"),
])
def test_unknown_keys_get_the_closest_valid_name(tmp_path, text, message):
    from analysis import metadata

    p = tmp_path / "c.toml"
    p.write_text(text)
    data, source = read_config_file(p)
    with pytest.raises(ConfigError, match=re.escape(message)):  # the analysis sections, then [report]
        validate_config(data, source), metadata.validate_report(data, source)


def test_model_dump_round_trips_to_an_equal_config(tmp_path):
    from conftest import PROJECT

    cfgs = [Config(), load_config(PROJECT / "analysis.toml"),
            Config().replace(bids={"confounds": ["trans_x", "rot_z"], "subject": "01"},
                             contrasts={"AvsB": "A - B", "mean": "0.5 * (A + B)"}, statmap={"fwhm": 4})]
    for cfg in cfgs:
        data = json.loads(json.dumps(cfg.model_dump(mode="json")))  # through JSON text, as results.json stores it
        back = Config.model_validate(data)
        assert back == cfg and back.canonical_json() == cfg.canonical_json()
        assert isinstance(back.bids.confounds, tuple) and back.contrasts == cfg.contrasts
        assert Config.model_validate_json(json.dumps(data)) == cfg


def test_source_names_the_file_but_is_not_part_of_the_values(tmp_path):
    p, cfg = _load(tmp_path, "[glm]\nt_r = 2\n")
    assert cfg.source == str(p) and load_config(None).source in ("defaults", "analysis.toml")
    assert "source" not in cfg.model_dump() and str(p) not in cfg.canonical_json()
    assert cfg == Config().replace(glm={"t_r": 2}) and cfg.replace(glm={"t_r": 3}).source == str(p)
    assert Config.model_validate(cfg.model_dump(), context={"source": "results.json"}).source == "results.json"
    import pickle

    again = pickle.loads(pickle.dumps(cfg))  # as a Dask task receives it
    assert again == cfg and again.source == str(p)


def test_replace_validates_and_returns_a_new_config():
    a = Config()
    b = a.replace(glm={"t_r": 2.0}, inference={"primary": "fdr"})
    assert (b.glm.t_r, b.glm.hrf_model, b.inference.primary, a.glm.t_r) == (2.0, "spm", "fdr", 0.0)
    with pytest.raises(ConfigError, match=r"glm.t_r must be a number"):
        a.replace(glm={"t_r": "2"})
    with pytest.raises(ConfigError, match=r"unknown key 'glm.tr'; did you mean 'glm.t_r'"):
        a.replace(glm={"tr": 2.0})


def test_config_is_immutable():
    cfg = Config()
    with pytest.raises(ValidationError):
        cfg.glm.t_r = 2.0
    with pytest.raises(ValidationError):
        cfg.glm = cfg.glm


def test_to_dict_and_from_dict_are_gone():
    assert not hasattr(Config, "to_dict") and not hasattr(Config, "from_dict")


def test_literal_choices_match_the_modules_that_implement_them():
    import typing

    from analysis import config
    from analysis.noise import NOISE_MODELS
    from analysis.rft import SMOOTHNESS_METHODS

    assert typing.get_args(config.NoiseModelName) == tuple(NOISE_MODELS)
    assert typing.get_args(config.SmoothnessMethod) == SMOOTHNESS_METHODS
    assert config.DATASETS == ("spm_auditory", "simulated", "bids", "statmap")


def test_config_and_report_come_from_one_parse(tmp_path, monkeypatch):
    import tomllib

    from analysis import config as config_module
    from analysis import metadata

    p = tmp_path / "c.toml"
    p.write_text('[glm]\nt_r = 2\n[report]\ntitle = "T"\n[[report.authors]]\nname = "A"\n')
    calls = []
    real = tomllib.loads
    monkeypatch.setattr(tomllib, "loads", lambda text: calls.append(1) or real(text))
    data, source = config_module.read_config_file(p)
    cfg, meta = config_module.validate_config(data, source), metadata.validate_report(data, source)
    assert len(calls) == 1 and cfg.glm.t_r == 2.0 and meta.title == "T" and meta.source == str(p)
    assert "report" not in cfg.model_dump()  # not a cache input


def test_report_metadata_is_strict_and_round_trips(tmp_path):
    from analysis import metadata

    p = tmp_path / "c.toml"
    p.write_text('[report]\ntitle = 3\n')
    with pytest.raises(metadata.MetadataError, match=re.escape(f"{p}: report.title must be a string, not 3")):
        metadata.from_toml(p)
    meta = metadata.ReportMetadata.model_validate(
        {"title": " T ", "keywords": ["fMRI"],
         "authors": [{"name": "A", "orcid": "https://orcid.org/0000-0002-1825-0097"}]})
    assert meta.title == "T" and meta.authors[0].orcid == "0000-0002-1825-0097"
    assert metadata.ReportMetadata.model_validate(meta.model_dump(mode="json")) == meta
