"""The JSON Schema and the loader agree: both accept every config in the repository and
both reject every bad config of the catalogue, the loader with the problems the file expects.

A few checks are beyond what a JSON Schema can say (comparing values across the document,
RE2's syntax, header names equal but for case): LOADER_ONLY names the fixtures only the loader
rejects, and why; the schema must accept exactly those, so that the list stays true."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from sidecar_dispatcher.config.load import ConfigError, load_config

from .bad_configs import CATALOGUE, BadConfig

REPOSITORY = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPOSITORY / "addons" / "sidecar_dispatcher" / "config" / "schema.json"
SKIPPED_FOLDERS = {".venv", ".git", "fixtures", "node_modules"}

# Bad configs the schema accepts: what it cannot express, by fixture.
LOADER_ONLY = {
    "route-name-duplicate": "route names are unique: no JSON Schema keyword compares values",
    "route-name-also-a-rule": "a route name may not also be a key of rewrites",
    "route-regex-not-re2": "RE2's syntax (a backreference here) is not a JSON Schema format",
    "route-path-regex-not-re2": "RE2's syntax (a lookahead here) is not a JSON Schema format",
    "route-header-matched-twice": "header names differing only in case are different keys",
}


def repository_configs() -> list[Path]:
    """Every dispatcher config in the repository: YAML files with top-level key + destination."""
    found = []
    for path in sorted(REPOSITORY.rglob("*.yaml")):
        if SKIPPED_FOLDERS & set(path.relative_to(REPOSITORY).parts):
            continue
        documents = list(yaml.safe_load_all(path.read_text()))  # Kubernetes files hold several
        if any(isinstance(d, dict) and {"key", "destination"} <= d.keys() for d in documents):
            found.append(path)
    return [*found, *sorted((REPOSITORY / "tests" / "fixtures" / "good-configs").glob("*.yaml"))]


class _EditorLikeLoader(yaml.SafeLoader):
    """Reads YAML as an editor's language server does: dates stay text, duplicates are errors."""


_EditorLikeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    keys = [loader.construct_object(key) for key, _ in node.value]
    if len(keys) != len(set(keys)):
        raise yaml.constructor.ConstructorError(None, None, "duplicate key", node.start_mark)
    return loader.construct_mapping(node)


_EditorLikeLoader.add_constructor("tag:yaml.org,2002:map", _no_duplicates)


def schema_accepts(path: Path) -> bool:
    schema = json.loads(SCHEMA_PATH.read_text())
    try:
        data = yaml.load(path.read_text(), Loader=_EditorLikeLoader)
    except yaml.YAMLError:
        return False
    valid: bool = jsonschema.Draft202012Validator(schema).is_valid(data)
    return valid


def test_the_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA_PATH.read_text()))


def test_the_repository_has_configs_to_compare() -> None:
    names = {path.name for path in repository_configs()}
    assert {"config.yaml", "everything.yaml", "original-readme.yaml"} <= names
    assert {"routes.yaml", "routes-everything.yaml", "unmatched-only.yaml"} <= names
    assert len(CATALOGUE) >= 80
    assert set(LOADER_ONLY) <= {case.name for case in CATALOGUE}


@pytest.mark.parametrize("path", repository_configs(), ids=lambda p: str(p.relative_to(REPOSITORY)))
def test_schema_and_loader_accept_every_repository_config(path: Path) -> None:
    load_config(path)
    assert schema_accepts(path)


@pytest.mark.parametrize("case", CATALOGUE, ids=lambda case: case.name)
def test_loader_reports_what_each_bad_config_expects_and_the_schema_rejects_it_unless_it_cannot(
    case: BadConfig,
) -> None:
    assert case.expected, f"{case.path} has no '# expect: LINE:COL: message' comment"
    with pytest.raises(ConfigError) as raised:
        load_config(case.path)
    reported = [str(problem) for problem in raised.value.problems]
    assert len(reported) == len(case.expected), reported
    for problem, expected in zip(reported, case.located(), strict=True):
        assert problem.startswith(expected), problem
    assert schema_accepts(case.path) == (case.name in LOADER_ONLY), LOADER_ONLY.get(case.name)


@pytest.mark.parametrize(
    "path",
    # the original project's README example is kept byte for byte
    [path for path in repository_configs() if path.name != "original-readme.yaml"],
    ids=lambda p: str(p.relative_to(REPOSITORY)),
)
def test_example_configs_point_editors_at_the_schema(path: Path) -> None:
    first_line = path.read_text().splitlines()[0]
    match = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", first_line)
    assert match, f"{path} does not start with the yaml-language-server schema comment"
    assert (path.parent / match.group(1)).resolve() == SCHEMA_PATH
