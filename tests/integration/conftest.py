from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .processes import ENGINES, Sidecar, Upstream, free_port


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def default_upstream() -> Iterator[Upstream]:
    upstream = Upstream("default").start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="session")
def dev_upstream() -> Iterator[Upstream]:
    upstream = Upstream("dev").start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="session")
def closed_port() -> int:
    """A loopback port nothing listens on: a destination that is down."""
    return free_port()


def dispatch_config(default: Upstream, dev: Upstream, closed_port: int) -> str:
    return f"""
key: environment
destination: {default.url}
rewrites:
  dev:
    patch:
      - key: Host
        val: example.com
      - key: dispatched
        val: true
    destination: {dev.url}/base
  qa:
    patch:
      - key: dispatched
        val: true
  token:
    patch:
      - key: Authorization
        val: Bearer s3cret-token
    destination: {dev.url}
  down:
    patch:
      - key: dispatched
        val: true
    destination: http://127.0.0.1:{closed_port}
"""


@pytest.fixture(scope="session")
def config_file(
    tmp_path_factory: pytest.TempPathFactory,
    default_upstream: Upstream,
    dev_upstream: Upstream,
    closed_port: int,
) -> Path:
    path = tmp_path_factory.mktemp("config") / "sidecar.yaml"
    path.write_text(dispatch_config(default_upstream, dev_upstream, closed_port))
    return path


@pytest.fixture(scope="module", params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs against mitmdump -s addons/dispatcher.py and the runner."""
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def sidecar(config_file: Path, default_upstream: Upstream, engine: str) -> Iterator[Sidecar]:
    """The sidecar as users run it: config through SIDECAR_CONFIG, reverse target = default."""
    process = Sidecar(
        default_upstream.url, env={"SIDECAR_CONFIG": str(config_file)}, engine=engine
    ).start()
    yield process
    process.stop()
