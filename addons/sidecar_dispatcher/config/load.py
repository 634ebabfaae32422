"""Read a dispatcher config (YAML) into an immutable `RuleSet`, or say exactly what is wrong.

    rules = load_config("config.yaml")

The file is composed into YAML nodes (safe loader, nothing constructed) and walked by hand
(`reader.py`), so that every problem carries its file, line and column and the key path it
concerns (`rewrites.dev.patch[1].val`). All problems are collected, not just the first.
"""

from __future__ import annotations

import os
import stat

import yaml

from ..core.model import RuleSet
from .problems import ConfigError, Problem, file_error
from .reader import read_rule_set

__all__ = [
    "MAX_CONFIG_BYTES",
    "ConfigError",
    "Problem",
    "load_config",
    "parse_config",
    "parse_config_bytes",
    "read_config_bytes",
]

# A config is a few kilobytes; a larger file is a mistake or an attack.
MAX_CONFIG_BYTES = 1024 * 1024

try:  # libyaml's composer is several times faster; both keep line and column marks.
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader


def load_config(path: str | os.PathLike[str]) -> RuleSet:
    """Read and validate the config file at `path`."""
    source = os.fspath(path)
    return parse_config_bytes(read_config_bytes(source), source)


def read_config_bytes(source: str) -> bytes:
    """The file's bytes, at most MAX_CONFIG_BYTES; ConfigError when it cannot be read.

    Only a regular file (or a symlink to one) is read: opening a FIFO would wait for a writer
    forever, and a device or socket is never a config.
    """
    try:
        mode = os.stat(source).st_mode
    except FileNotFoundError:
        raise file_error(source, "config file not found") from None
    except OSError as e:
        raise file_error(source, f"cannot read config file: {e.strerror or e}") from None
    if stat.S_ISDIR(mode):
        raise file_error(source, "expected a config file, found a directory")
    if not stat.S_ISREG(mode):
        found = "a FIFO" if stat.S_ISFIFO(mode) else "a socket or device"
        raise file_error(source, f"expected a regular config file, found {found}")
    try:
        with open(source, "rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise file_error(source, "config file not found") from None
    except IsADirectoryError:
        raise file_error(source, "expected a config file, found a directory") from None
    except OSError as e:
        raise file_error(source, f"cannot read config file: {e.strerror or e}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise file_error(source, f"config file is larger than {MAX_CONFIG_BYTES} bytes")
    return data


def parse_config_bytes(data: bytes, source: str) -> RuleSet:
    """Decode UTF-8 (a BOM is allowed) and parse; ConfigError names a bad byte's position."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        problem = Problem(source, line, column, "", "config file is not valid UTF-8 text")
        raise ConfigError([problem]) from None
    return parse_config(text, source)


def parse_config(text: str, source: str = "<string>") -> RuleSet:
    """Validate YAML `text` and build the RuleSet; raise ConfigError listing every problem."""
    if len(text) > MAX_CONFIG_BYTES:
        raise file_error(source, f"config is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        detail = " ".join(part for part in (e.context, e.problem) if part)
        raise ConfigError([Problem(source, line, column, "", f"invalid YAML: {detail}")]) from None
    except yaml.YAMLError as e:
        raise file_error(source, f"invalid YAML: {e}") from None
    return read_rule_set(root, source)
