from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sidecar_dispatcher.testing.configs import dispatch_config
from sidecar_dispatcher.testing.loopback import free_port

from .processes import ENGINES, Sidecar, Upstream

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this folder (and only those: this hook sees the whole session's items)
    starts processes or servers: `integration` and `spawns` (which `make test-fast` leaves out)."""
    for item in items:
        if item.path.resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.spawns)


@pytest.fixture(scope="session")
def default_upstream() -> Iterator[Upstream]:
    with Upstream("default") as upstream:
        yield upstream


@pytest.fixture(scope="session")
def dev_upstream() -> Iterator[Upstream]:
    with Upstream("dev") as upstream:
        yield upstream


@pytest.fixture(scope="session")
def closed_port() -> int:
    """A loopback port nothing listens on: a destination that is down."""
    return free_port()


SaveConfig = Callable[[str], Path]


@pytest.fixture(scope="session")
def save_config(tmp_path_factory: pytest.TempPathFactory) -> SaveConfig:
    """Write a config's text to a file in a fresh temporary folder and return its path."""

    def save(text: str) -> Path:
        path = tmp_path_factory.mktemp("config") / "sidecar.yaml"
        path.write_text(text)
        return path

    return save


@pytest.fixture(scope="session")
def config_file(
    save_config: SaveConfig, default_upstream: Upstream, dev_upstream: Upstream, closed_port: int
) -> Path:
    """dev to the dev upstream under /base, token to it at its root, down to the closed port."""
    return save_config(
        dispatch_config(
            default_upstream.url,
            dev=f"{dev_upstream.url}/base",
            token=dev_upstream.url,
            down=f"http://127.0.0.1:{closed_port}",
        )
    )


@pytest.fixture(scope="module", params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs against mitmdump -s addons/dispatcher.py and the runner."""
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def sidecar(config_file: Path, default_upstream: Upstream, engine: str) -> Iterator[Sidecar]:
    """The sidecar as users run it: config through SIDECAR_CONFIG, reverse target = default."""
    env = {"SIDECAR_CONFIG": str(config_file)}
    with Sidecar(default_upstream.url, env=env, engine=engine) as process:
        yield process
