"""The options module is the one owner of option names, defaults, help and variables."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from mitmproxy.test import taddons

from sidecar_dispatcher import Dispatcher, options

PACKAGE = Path(options.__file__).parent


def test_the_dispatcher_declares_every_option_as_the_options_module_describes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in (options.CONFIG_VARIABLE, options.ACCESS_LOG_VARIABLE):
        monkeypatch.delenv(variable, raising=False)
    with taddons.context(Dispatcher()) as tctx:
        loaded_options = dict(tctx.options.items())
        declared = {name for name in loaded_options if name.startswith("dispatcher_")}
        assert declared == {option.name for option in options.ALL}
        for option in options.ALL:
            loaded = loaded_options[option.name]
            assert (loaded.default, loaded.help, loaded.typespec) == (
                option.default,
                option.help,
                option.typespec,
            )
            assert loaded.choices == option.choices


def test_an_environment_variable_sets_the_default_of_its_option(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(options.CONFIG_VARIABLE, "/etc/sidecar/config.yaml")
    monkeypatch.setenv(options.ACCESS_LOG_VARIABLE, "json")
    with taddons.context(Dispatcher()) as tctx:
        assert tctx.options.dispatcher_config == "/etc/sidecar/config.yaml"
        assert tctx.options.dispatcher_access_log == "json"


def test_an_empty_variable_leaves_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(options.CONFIG_VARIABLE, "")
    assert options.default_config_path() == options.DEFAULT_CONFIG_PATH


def test_no_other_module_spells_an_option_name_or_a_variable_as_a_literal() -> None:
    owned = {option.name for option in options.ALL} | {
        value
        for name, value in vars(options).items()
        if name.endswith("_VARIABLE") and isinstance(value, str)
    }
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "options.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and node.value.partition("=")[0] in owned
            ):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    assert not found, "option names or variables outside options.py:\n" + "\n".join(found)
