import tomllib

import pytest

from merforge.errors import ConfigError
from merforge.storage.config import DEFAULT_CONFIG_TOML, Config, load_config, parse_config


def test_default_file_written_by_init_parses_to_the_defaults():
    assert parse_config(tomllib.loads(DEFAULT_CONFIG_TOML)) == Config()


def test_init_writes_a_commented_config(workspace):
    text = (workspace.root / "merforge.toml").read_text()
    assert text.count("#") > 10
    assert load_config(workspace.root / "merforge.toml") == Config()


def test_bad_choice_names_key_value_and_allowed_values():
    with pytest.raises(ConfigError) as error:
        parse_config({"shots": {"detector": "magic"}})
    message = str(error.value)
    assert "shots.detector = 'magic'" in message
    assert "'content'" in message and "'adaptive'" in message and "'histogram'" in message


def test_out_of_range_number_names_the_bound():
    with pytest.raises(ConfigError) as error:
        parse_config({"keyframes": {"candidate_fps": -2}})
    assert "keyframes.candidate_fps = -2" in str(error.value)
    assert "> 0" in str(error.value)


def test_unknown_key_lists_the_allowed_keys():
    with pytest.raises(ConfigError) as error:
        parse_config({"vad": {"treshold": 0.4}})
    assert "vad.treshold: unknown key" in str(error.value)
    assert "threshold" in str(error.value)


def test_cross_field_rule():
    with pytest.raises(ConfigError, match="min_length .* must be smaller than planner.max_length"):
        parse_config({"planner": {"min_length": 20, "max_length": 10}})


def test_broken_toml_is_reported_with_the_file(tmp_path):
    path = tmp_path / "merforge.toml"
    path.write_text("[shots\ndetector = 'content'\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_sampling_hash_changes_only_with_sampling_settings():
    base = Config()
    assert parse_config({"store": {"database_url": "sqlite:///x.db"}}).sampling_hash() == base.sampling_hash()
    assert parse_config({"shots": {"content_threshold": 30}}).sampling_hash() != base.sampling_hash()
