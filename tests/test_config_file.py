"""A running dispatcher's view of its config file: new content, seen content, absence."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar_dispatcher.config.file import ConfigFile, ConfigFileMissing
from sidecar_dispatcher.config.load import ConfigError
from sidecar_dispatcher.core.model import Destination

GOOD = "key: environment\ndestination: http://a.test\n"
OTHER = "key: environment\ndestination: http://b.test\n"


def test_same_content_is_not_read_twice(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(GOOD)
    config_file = ConfigFile(str(path))
    assert config_file.load().default == Destination("http", "a.test", 80)
    assert config_file.changed() is None
    path.write_text(OTHER)
    rules = config_file.changed()
    assert rules is not None
    assert rules.default == Destination("http", "b.test", 80)


def test_bad_content_is_reported_once(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(GOOD)
    config_file = ConfigFile(str(path))
    config_file.load()
    path.write_text("key: [\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        config_file.changed()
    assert config_file.changed() is None


def test_missing_file_is_reported_once_then_its_return_is_new(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(GOOD)
    config_file = ConfigFile(str(path))
    config_file.load()
    path.unlink()
    with pytest.raises(ConfigFileMissing, match="config file not found"):
        config_file.changed()
    assert config_file.changed() is None
    path.write_text(GOOD)
    assert config_file.changed() is not None  # same bytes as before, but it came back


def test_load_reads_even_unchanged_content(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(GOOD)
    config_file = ConfigFile(str(path))
    config_file.load()
    assert config_file.load().default == Destination("http", "a.test", 80)
