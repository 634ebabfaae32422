"""What is wrong with a config file, located as precisely as the file allows.

raise ConfigError([Problem("config.yaml", 3, 5, "rewrites.dev", "expected a mapping")])
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config file."""

    source: str
    line: int  # 1-based
    column: int  # 1-based
    path: str  # key path, e.g. "rewrites.dev.patch[1].val"; "" for the whole file
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(ValueError):
    """A config that cannot be used; `problems` lists every reason found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


def file_error(source: str, message: str) -> ConfigError:
    """A problem with the file as a whole (missing, unreadable, too large): placed at 1:1."""
    return ConfigError([Problem(source, 1, 1, "", message)])
