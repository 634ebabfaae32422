"""The config file behind a running dispatcher: what was read last, and whether it changed."""

from __future__ import annotations

import os

from ..core.model import RuleSet
from .load import ConfigError, Problem, parse_config_bytes, read_config_bytes


class ConfigFileMissing(ConfigError):
    """The config file is gone (deleted, or a dangling symlink)."""


class ConfigFile:
    """Reads `path` when asked, and tells new content apart from content already seen.

    Seen content includes bad versions and absence, so that a broken or deleted file is
    reported once rather than on every file event, and reading the same bytes again is a no-op.
    """

    _MISSING = object()

    def __init__(self, path: str) -> None:
        self.path = path
        self._seen: object = None

    def load(self) -> RuleSet:
        """Read and parse now, whatever was seen before; ConfigError when unusable."""
        self._seen = None
        rules = self.changed()
        assert rules is not None
        return rules

    def changed(self) -> RuleSet | None:
        """New rules if the file differs from what was seen last, else None.

        Raises ConfigError for new content that is unusable, ConfigFileMissing the first time
        the file is found missing.
        """
        if not os.path.exists(self.path):
            if self._seen is self._MISSING:
                return None
            self._seen = self._MISSING
            raise ConfigFileMissing([Problem(self.path, 1, 1, "", "config file not found")])
        data = read_config_bytes(self.path)
        if data == self._seen:
            return None
        self._seen = data
        return parse_config_bytes(data, self.path)
