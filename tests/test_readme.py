"""Every command the README and docs/*.md show still works, and every link still leads somewhere.

Fast and offline: the documents are read as text, the CLI's parser is built in-process, the
runner's options are read from its addons without starting anything, and `validate`/`explain`
run in this process against the repository's config.yaml.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from mitmproxy import options
from mitmproxy.addons import core, termlog
from mitmproxy.test import taddons

from sidecar_dispatcher import Dispatcher
from sidecar_dispatcher.runner.serve import lean_addons
from sidecar_dispatcher.tools.cli import make_parser

from .conftest import Result, run_command

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
SUBCOMMANDS = ("run", "validate", "explain")
# Languages of fenced blocks whose lines are commands; `console` blocks: the lines after "$ ".
SHELL_LANGUAGES = {"sh", "shell", "bash"}
FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w-]*)")
INLINE_CODE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")
INLINE_LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
SHELL_VARIABLE = re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?")
MAKEFILE_RULE = re.compile(r"^([A-Za-z0-9_.-]+(?:[ \t]+[A-Za-z0-9_.-]+)*)[ \t]*:(?![=:])")
COMMAND_ENDS = {"&&", "||", "|", ";", ">", ">>", "<"}


@dataclass(frozen=True)
class Code:
    """A piece of code in a document: a command line of a shell block, or an inline span."""

    document: Path
    line: int
    text: str
    command_line: bool  # a whole command from a sh/console block, not a fragment in prose

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def markdown_lines(document: Path) -> Iterator[tuple[int, str, str | None]]:
    """(line number, text, language of the fenced block it is in, or None outside blocks)."""
    fence: str | None = None
    language: str | None = None
    for number, text in enumerate(document.read_text(encoding="utf-8").splitlines(), 1):
        opening = FENCE.match(text)
        if fence is None and opening:
            fence, language = opening.group(1), opening.group(2).lower()
            continue
        closing = text.strip()
        if fence is not None and closing.startswith(fence) and not closing.strip(fence[0]):
            fence = language = None
            continue
        yield number, text, language if fence is not None else None


def code_in(document: Path) -> Iterator[Code]:
    continued: tuple[int, str] | None = None
    for number, text, language in markdown_lines(document):
        if language is None:
            for span in INLINE_CODE.finditer(text):
                yield Code(document, number, span.group(2).strip(), command_line=False)
            continue
        if language == "console" and text.startswith("$ "):
            command = text[2:]
        elif language in SHELL_LANGUAGES:
            command = text
        else:
            continue
        start, joined = continued if continued else (number, "")
        joined += command.rstrip().removesuffix("\\") + " "
        if command.rstrip().endswith("\\"):
            continued = (start, joined)
            continue
        continued = None
        yield Code(document, start, joined.strip(), command_line=True)


def all_code() -> list[Code]:
    return [code for document in DOCUMENTS for code in code_in(document)]


def words(code: Code) -> list[str]:
    try:
        return shlex.split(code.text, comments=code.command_line)
    except ValueError:  # an unbalanced quote in a fragment of prose: plain words will do
        return code.text.split()


def commands_of(code: Code, program: str) -> Iterator[list[str]]:
    """The arguments after each `program` (or `python -m` of it) in `code`, to the command's end."""
    tokens = words(code)
    for index, token in enumerate(tokens):
        if token == program or (
            token == program.replace("-", "_") and tokens[max(index - 1, 0)] == "-m"
        ):
            arguments: list[str] = []
            for argument in tokens[index + 1 :]:
                if argument in COMMAND_ENDS:
                    break
                arguments.append(argument)
            yield arguments


def dispatcher_commands() -> Iterator[tuple[Code, list[str]]]:
    """Every `sidecar-dispatcher …` shown, with `run` made explicit as the CLI does."""
    for code in all_code():
        for arguments in commands_of(code, "sidecar-dispatcher"):
            if arguments and (arguments[0] in SUBCOMMANDS or not arguments[0].startswith("-")):
                yield code, arguments  # an unknown subcommand is reported by the tests
            else:
                yield code, ["run", *arguments]


def subparsers() -> dict[str, argparse.ArgumentParser]:
    for action in make_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("the sidecar-dispatcher parser has no subcommands")


# --- links


def heading_anchors(document: Path) -> set[str]:
    """The anchors GitHub gives the document's headings."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for _, text, language in markdown_lines(document):
        heading = HEADING.match(text)
        if language is not None or heading is None:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(2))  # a link's text
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def relative_links() -> Iterator[tuple[Path, int, str]]:
    for document in DOCUMENTS:
        for number, text, language in markdown_lines(document):
            if language is not None:
                continue
            prose = INLINE_CODE.sub("", text)
            targets = [m.group(1) for m in INLINE_LINK.finditer(prose)]
            if reference := REFERENCE_LINK.match(prose):
                targets.append(reference.group(1))
            for target in targets:
                if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
                    yield document, number, target


def test_the_documents_exist() -> None:
    assert README.is_file()
    assert len(DOCUMENTS) > 1, "docs/*.md: the README's deep dives are missing"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {
        (README.parent / unquote(target.partition("#")[0])).resolve()
        for document, _, target in relative_links()
        if document == README
    }
    unlinked = [str(page.relative_to(ROOT)) for page in DOCUMENTS[1:] if page not in linked]
    assert not unlinked, f"docs pages the README does not link to: {unlinked}"


def test_every_relative_link_points_to_an_existing_file() -> None:
    broken = [
        f"{document.relative_to(ROOT)}:{number}: {target}"
        for document, number, target in relative_links()
        if (path := target.partition("#")[0]) and not (document.parent / unquote(path)).exists()
    ]
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


def test_every_anchor_names_a_heading_of_its_target() -> None:
    broken = []
    for document, number, target in relative_links():
        path, hash_sign, anchor = target.partition("#")
        linked = (document.parent / unquote(path)).resolve() if path else document
        if not hash_sign or linked.suffix != ".md" or not linked.is_file():
            continue  # no anchor, or not a markdown page (missing files: the test above)
        if anchor not in heading_anchors(linked):
            broken.append(f"{document.relative_to(ROOT)}:{number}: {target}")
    assert not broken, "anchors with no heading of that name:\n" + "\n".join(broken)


# --- make


def makefile_targets() -> set[str]:
    targets: set[str] = set()
    for line in (ROOT / "Makefile").read_text(encoding="utf-8").splitlines():
        if rule := MAKEFILE_RULE.match(line):
            targets.update(t for t in rule.group(1).split() if not t.startswith("."))
    return targets


def test_every_make_target_shown_exists_in_the_makefile() -> None:
    targets = makefile_targets()
    unknown = []
    for code in all_code():
        for arguments in commands_of(code, "make"):
            # `make PYTHON=… test`, `make bench BENCH_ARGS=--quick`: the first plain word
            shown = next((a for a in arguments if "=" not in a and not a.startswith("-")), None)
            if shown is not None and shown not in targets:
                unknown.append(f"{code.where}: make {shown}")
    assert not unknown, f"make targets the Makefile lacks ({sorted(targets)}):\n" + "\n".join(
        unknown
    )


def test_the_readme_quick_start_runs_make_run_and_make_test_as_ci_does() -> None:
    quick_start = [
        words(code)
        for code in code_in(README)
        if code.command_line and code.text.startswith("make")
    ]
    assert quick_start[:2] == [["make", "run"], ["make", "test"]]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").split()
    assert "test" in [ci[i + 1] for i, word in enumerate(ci[:-1]) if word == "make"]


# --- sidecar-dispatcher


def test_every_sidecar_dispatcher_subcommand_shown_exists() -> None:
    shown = list(dispatcher_commands())
    assert shown, "no `sidecar-dispatcher` command found in the documents"
    unknown = [
        f"{code.where}: sidecar-dispatcher {arguments[0]}"
        for code, arguments in shown
        if arguments[0] not in subparsers()
    ]
    assert not unknown, f"subcommands the CLI lacks ({sorted(subparsers())}):\n" + "\n".join(
        unknown
    )


def test_every_flag_shown_for_a_subcommand_is_accepted_by_its_parser() -> None:
    parsers = subparsers()
    unknown = []
    for code, arguments in dispatcher_commands():
        parser = parsers.get(arguments[0])
        if parser is None:
            continue  # the test above reports it
        for argument in arguments[1:]:
            flag = argument.strip("[]").partition("=")[0]
            if (
                re.fullmatch(r"--?[A-Za-z][\w-]*", flag)
                and flag not in parser._option_string_actions
            ):
                unknown.append(f"{code.where}: sidecar-dispatcher {arguments[0]} {flag}")
    assert not unknown, "flags the parser refuses:\n" + "\n".join(unknown)


def test_every_sidecar_dispatcher_command_line_shown_parses() -> None:
    refused = []
    for code, arguments in dispatcher_commands():
        if not code.command_line or arguments[0] not in SUBCOMMANDS:
            continue
        # $SIDECAR_WORKERS and the like stand for a value of the user's choice
        argv = [SHELL_VARIABLE.sub("1", argument) for argument in arguments]
        with contextlib.redirect_stderr(io.StringIO()) as error:
            try:
                make_parser().parse_args(argv)
            except SystemExit:
                refused.append(f"{code.where}: {shlex.join(argv)}\n  {error.getvalue().strip()}")
    assert not refused, "command lines the CLI refuses:\n" + "\n".join(refused)


def runner_option_names() -> set[str]:
    """The options `sidecar-dispatcher run` accepts: those of the addons its master holds."""
    addons = lean_addons()
    if not any(isinstance(addon, Dispatcher) for addon in addons):
        addons.append(Dispatcher())
    terminal = termlog.TermLog(io.StringIO())  # the runner's master is built with_termlog
    try:
        with taddons.context(
            *addons,
            terminal,
            options=options.Options(),
            loadcore=not any(isinstance(addon, core.Core) for addon in addons),
        ) as tctx:
            return set(tctx.options.keys())
    finally:
        terminal.uninstall()


def test_every_option_set_for_the_runner_is_one_it_accepts() -> None:
    accepted = runner_option_names()
    assert {"dispatcher_config", "listen_host", "stream_large_bodies"} <= accepted
    assert "block_global" in accepted  # as mitmdump, the runner loads mitmproxy's block addon
    unknown = []
    for code, arguments in dispatcher_commands():
        if arguments[0] != "run":
            continue
        for flag, value in itertools.pairwise(arguments):
            name = value.partition("=")[0].strip("`")
            # NAME=VALUE is the placeholder of a synopsis; `…` marks an elided example
            if flag == "--set" and name != name.upper() and name not in accepted:
                unknown.append(f"{code.where}: --set {name}")
    assert not unknown, "options the runner refuses:\n" + "\n".join(unknown)


# --- what the commands print


def run_in_repository(arguments: list[str]) -> Result:
    """The command in this process, in the repository's folder."""
    return run_command(*arguments, cwd=ROOT)


def test_validate_accepts_the_repository_config() -> None:
    printed = run_in_repository(["validate", "config.yaml"])
    assert printed.returncode == 0, printed.stdout + printed.stderr
    assert printed.stdout.startswith("config.yaml: OK")


def console_transcripts() -> Iterator[tuple[Path, int, list[str], list[str]]]:
    """(document, line, command's arguments, lines it is shown to print) of every console block
    showing `$ sidecar-dispatcher validate|explain …` against files of the repository."""
    for document in DOCUMENTS:
        shown: tuple[int, list[str], list[str]] | None = None
        for number, text, language in [*markdown_lines(document), (0, "", None)]:
            if shown and (language != "console" or text.startswith("$ ")):
                yield document, *shown
                shown = None
            if language == "console" and text.startswith("$ sidecar-dispatcher "):
                arguments = shlex.split(text[2:])[1:]
                files = [a for a in arguments[1:] if a.endswith((".yaml", ".yml"))]
                if arguments[0] in ("validate", "explain") and all(
                    (ROOT / name).is_file() for name in files
                ):
                    shown = (number, arguments, [])
            elif shown:
                shown[2].append(text)


def test_the_validate_and_explain_transcripts_match_what_the_commands_print() -> None:
    transcripts = list(console_transcripts())
    assert transcripts, "no `$ sidecar-dispatcher validate|explain` transcript found"
    for document, number, arguments, lines in transcripts:
        printed = run_in_repository(arguments)
        where = f"{document.relative_to(ROOT)}:{number}: sidecar-dispatcher {shlex.join(arguments)}"
        assert (printed.stdout + printed.stderr).splitlines() == lines, where
