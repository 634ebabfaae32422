"""The catalogue of bad configs: each file in fixtures/bad-configs says what the loader reports.

    for expected in bad_config("broken-yaml").located(): assert expected in logs

A fixture opens with one `# expect: LINE:COL: MESSAGE` comment per problem, in the order the
loader reports them: each problem is `file:LINE:COL: ` followed by text that begins with MESSAGE
(most are written whole). The unit tests run the loader and the JSON Schema on every file; the
integration tests start a sidecar on a few of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

FOLDER = Path(__file__).resolve().parent / "fixtures" / "bad-configs"
_EXPECT = re.compile(r"^# expect: (\d+:\d+: .+)$", re.MULTILINE)


@dataclass(frozen=True)
class BadConfig:
    path: Path
    expected: tuple[str, ...]  # "LINE:COL: message", one per problem, in reported order

    @property
    def name(self) -> str:
        return self.path.stem

    def located(self) -> list[str]:
        """What each problem starts with, file name included, as the loader reports it."""
        return [f"{self.path}:{expected}" for expected in self.expected]


def _read(path: Path) -> BadConfig:
    return BadConfig(path, tuple(_EXPECT.findall(path.read_text(encoding="utf-8"))))


CATALOGUE = tuple(_read(path) for path in sorted(FOLDER.glob("*.yaml")))


def bad_config(name: str) -> BadConfig:
    return next(case for case in CATALOGUE if case.name == name)
