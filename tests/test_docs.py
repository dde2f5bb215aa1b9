"""The documentation against the code, so that neither changes without the other.

The reference (``docs/reference/``) is read table by table and compared, both
ways, with what the code defines: the settings with ``conf.DEFAULTS``, the
system checks with ``checks.py``, the environment variables with what the
programs and the demo read, the close codes and the event's fields with the
broadcaster's, the Python API with what imports, the metrics with what each
program exports. Every relative link of the README, SECURITY.md and docs/
leads to a file, and its anchor to a heading there; every ``make`` target
they name exists.

No database and no server: the files and the modules are enough.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import get_commands
from websockets.frames import CloseCode

from live_notifications import conf
from live_notifications import metrics as web_metrics
from live_notifications.broadcaster.metrics import Metrics as BroadcasterMetrics
from live_notifications.relay.metrics import Metrics as RelayMetrics
from live_notifications.shared.events import AppEvent, Audience, Event

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"
PACKAGE = ROOT / "src" / "live_notifications"
DEMO = ROOT / "services" / "web"
#: The Markdown files whose links and commands are checked.
PAGES = sorted([ROOT / "README.md", ROOT / "SECURITY.md", *DOCS.rglob("*.md")])


@pytest.fixture(autouse=True)
def _servers() -> None:
    """Nothing to start: stands for the root conftest's fixture, which starts Redis."""


# Reading Markdown.

FENCE = re.compile(r"^\s*```")
HEADING = re.compile(r"^(#{1,6}) (.+)$")
CODE_SPAN = re.compile(r"`([^`]+)`")


def prose(text: str) -> Iterator[str]:
    """The lines of ``text`` outside fenced code blocks."""
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            yield line


def section(path: Path, heading: str) -> str:
    """The text under ``heading`` (as written, ``## Name``), up to the next
    heading of the same level or above."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = path.read_text().splitlines()
    assert heading in lines, f"{path.relative_to(ROOT)} has no heading {heading!r}"
    start = lines.index(heading) + 1
    end = start
    fenced = False
    while end < len(lines):
        if FENCE.match(lines[end]):
            fenced = not fenced
        found = None if fenced else HEADING.match(lines[end])
        if found and len(found[1]) <= level:
            break
        end += 1
    return "\n".join(lines[start:end])


def tables(text: str) -> list[list[dict[str, str]]]:
    """The tables of ``text``, each a list of rows keyed by the header's cells."""
    found: list[list[dict[str, str]]] = []
    lines = list(prose(text))
    index = 0
    while index + 1 < len(lines):
        if lines[index].startswith("|") and re.fullmatch(r"\|( *:?-+:? *\|)+", lines[index + 1]):
            header = cells(lines[index])
            rows = []
            index += 2
            while index < len(lines) and lines[index].startswith("|"):
                row = cells(lines[index])
                assert len(row) == len(header), f"a row of {len(row)} cells: {lines[index]}"
                rows.append(dict(zip(header, row, strict=True)))
                index += 1
            found.append(rows)
        else:
            index += 1
    return found


def table(path: Path, heading: str, number: int = 0) -> list[dict[str, str]]:
    """The ``number``-th table under ``heading``."""
    found = tables(section(path, heading))
    assert len(found) > number, f"no table {number} under {heading!r} in {path.name}"
    return found[number]


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def spans(cell: str) -> list[str]:
    """The code spans of a cell: ```X`, `Y``` -> ["X", "Y"]."""
    return CODE_SPAN.findall(cell)


def prose_spans(text: str) -> set[str]:
    """The code spans of ``text``'s prose (fenced blocks aside)."""
    return set(spans("\n".join(prose(text))))


def only(cell: str) -> str:
    """The one code span a cell holds."""
    found = spans(cell)
    assert len(found) == 1, f"expected one `name` in {cell!r}"
    return found[0]


def names(rows: list[dict[str, str]], column: str) -> set[str]:
    """Every code span of ``column``: a cell may name several."""
    return {name for row in rows for name in spans(row[column])}


def python_files(root: Path) -> Iterator[Path]:
    """The modules under ``root``, tests excluded."""
    for path in sorted(root.rglob("*.py")):
        if "tests" not in path.relative_to(root).parts:
            yield path


def calls(path: Path) -> Iterator[ast.Call]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            yield node


def literal(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


# The settings and the checks.

SETTINGS = REFERENCE / "settings.md"


def test_the_settings_table_is_conf_defaults() -> None:
    rows = table(SETTINGS, "## The package's settings")
    documented = {only(row["setting"]): ast.literal_eval(only(row["default"])) for row in rows}
    assert documented == {conf.PREFIX + name: value for name, value in conf.DEFAULTS.items()}


def test_the_other_settings_are_read_by_the_package() -> None:
    source = "\n".join(path.read_text() for path in python_files(PACKAGE))
    for name in names(table(SETTINGS, "## The other settings it follows"), "setting"):
        assert re.search(rf"\b{name}\b", source), f"the package doesn't read {name}"


def check_ids() -> set[str]:
    """The ``id=`` of every message ``checks.py`` creates."""
    return {
        value
        for call in calls(PACKAGE / "checks.py")
        for keyword in call.keywords
        if keyword.arg == "id" and (value := literal(keyword.value)) is not None
    }


def test_the_checks_table_is_checks_py() -> None:
    ids = check_ids()
    assert "live_notifications.E001" in ids, ids  # the reading works
    assert {only(row["id"]) for row in table(SETTINGS, "## System checks")} == ids


# The environment.

ENVIRONMENT = REFERENCE / "environment.md"
#: live_notifications.shared.environment's readers.
READERS = {"string", "integer", "number", "boolean", "string_list"}


def variables_read(root: Path) -> set[str]:
    """Variables read under ``root`` (tests excluded): ``environment.<reader>("NAME", …)``,
    ``os.environ.get/setdefault("NAME")``, ``os.environ["NAME"]``, ``os.getenv("NAME")``."""
    found: set[str] = set()
    for path in python_files(root):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Subscript)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "environ"
                and (name := literal(node.slice))
            ):
                found.add(name)
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if not node.args or (name := literal(node.args[0])) is None:
                continue
            owner, attribute = node.func.value, node.func.attr
            if (
                (isinstance(owner, ast.Name) and owner.id == "environment" and attribute in READERS)
                or (
                    isinstance(owner, ast.Attribute)
                    and owner.attr == "environ"
                    and attribute in ("get", "setdefault")
                )
                or (isinstance(owner, ast.Name) and owner.id == "os" and attribute == "getenv")
            ):
                found.add(name)
    return found


@pytest.mark.parametrize(
    ("heading", "root", "sample"),
    [
        ("## The package's programs", PACKAGE, "BROADCASTER_PORT"),
        ("## The demo project", DEMO, "DJANGO_SECRET_KEY"),
    ],
)
def test_the_environment_tables_are_what_the_code_reads(
    heading: str, root: Path, sample: str
) -> None:
    read = variables_read(root)
    assert sample in read, read  # the reading works
    documented = names(table(ENVIRONMENT, heading), "variable")
    assert not read - documented, f"read under {root.relative_to(ROOT)}, not in {heading!r}"
    assert not documented - read, f"in {heading!r}, read nowhere under {root.relative_to(ROOT)}"


def test_the_stack_table_is_what_make_and_compose_read() -> None:
    compose = (ROOT / "compose.yaml").read_text()
    documented = names(table(ENVIRONMENT, "## The stack"), "variable")
    interpolated = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", compose))
    assert not interpolated - documented, "compose.yaml reads these; the stack table lacks them"
    sources = "\n".join(
        [
            compose,
            (ROOT / "Makefile").read_text(),
            *(path.read_text() for path in (ROOT / "scripts").glob("*.sh")),
        ]
    )
    unread = {name for name in documented if not re.search(rf"\b{name}\b", sources)}
    assert not unread, "documented, but neither make nor compose reads them"


def block(lines: list[str], header: str) -> list[str]:
    """The lines indented under ``header``, a line of ``lines`` (stripped of its indent)."""
    starts = [index for index, line in enumerate(lines) if line.strip() == header]
    assert starts, f"no {header!r}"
    start = starts[0]
    indent = len(lines[start]) - len(lines[start].lstrip())
    found = []
    for line in lines[start + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        found.append(line)
    return found


def variables_given(lines: list[str]) -> set[str]:
    return {match[1] for line in lines if (match := re.match(r"\s+([A-Z][A-Z0-9_]*):", line))}


def test_what_compose_gives_the_containers_is_documented() -> None:
    lines = (ROOT / "compose.yaml").read_text().splitlines()
    everyone = variables_given(block(block(lines, "x-app: &app"), "environment: &app-environment"))
    assert "DJANGO_SETTINGS_MODULE" in everyone, everyone  # the reading works
    services = block(lines, "services:")
    given = set(everyone)
    for service in ("migrate:", "web:", "relay:", "broadcaster:"):
        lines_of_service = block(services, service)
        if any(line.strip() == "environment:" for line in lines_of_service):
            given |= variables_given(block(lines_of_service, "environment:"))
    given |= variables_given(block(lines, "x-event-history: &event-history"))
    documented = prose_spans(section(ENVIRONMENT, "## What compose gives the containers"))
    assert not given - documented, "compose gives these; environment.md doesn't say so"
    readme = prose_spans(section(ROOT / "README.md", "## Run your project with Docker"))
    assert not everyone - readme, "compose gives these; the README doesn't say so"


# The WebSocket conversation.

WEBSOCKET = REFERENCE / "websocket.md"


def close_codes() -> tuple[set[tuple[int, str]], set[int]]:
    """What the broadcaster closes with: (code, reason) where the reason is
    written out, and the codes whose reason is composed."""
    written: set[tuple[int, str]] = set()
    composed: set[int] = set()
    for path in python_files(PACKAGE / "broadcaster"):
        for call in calls(path):
            if len(call.args) < 2:
                continue
            code, reason = call.args[-2], call.args[-1]
            if not (
                isinstance(code, ast.Attribute)
                and isinstance(code.value, ast.Name)
                and code.value.id == "CloseCode"
            ):
                continue
            number = CloseCode[code.attr].value
            text = literal(reason)
            if text is None:
                composed.add(number)
            else:
                written.add((number, text))
    return written, composed


def test_the_close_codes_table_is_the_broadcasters() -> None:
    written, composed = close_codes()
    assert (1008, "access revoked") in written, written  # the reading works
    rows = table(WEBSOCKET, "## Close codes")
    documented = {
        (int(row["code"]), only(row["reason"])) for row in rows if row["reason"].startswith("`")
    }
    assert documented == written
    assert composed <= {int(row["code"]) for row in rows}


def test_the_event_fields_table_is_events_py() -> None:
    documented = {only(row["field"]) for row in table(WEBSOCKET, "### Events")}
    assert documented == {field.name for field in dataclasses.fields(Event)}


def test_the_app_event_fields_table_is_what_clients_receive() -> None:
    documented = {only(row["field"]) for row in table(WEBSOCKET, "### App events")}
    event = AppEvent(event="x", data=None, timestamp="t", audience=Audience(everyone=True), id="i")
    assert documented == set(json.loads(event.message()))


# The Python API.

PYTHON_API = REFERENCE / "python-api.md"


def headings(text: str, level: int) -> list[str]:
    """The code span of each heading of ``level`` in ``text``."""
    return [
        only(match[2])
        for line in prose(text)
        if (match := HEADING.match(line)) and len(match[1]) == level
    ]


def resolve(dotted: str) -> Any:
    """The module, or the attribute of a module, that ``dotted`` names."""
    try:
        return importlib.import_module(dotted)
    except ModuleNotFoundError:
        module, _, attribute = dotted.rpartition(".")
        return getattr(importlib.import_module(module), attribute)


def bare(signature: inspect.Signature) -> str:
    """``signature`` as the reference writes it: no annotations."""
    parameters = [
        parameter.replace(annotation=inspect.Parameter.empty)
        for parameter in signature.parameters.values()
    ]
    return str(signature.replace(parameters=parameters, return_annotation=inspect.Signature.empty))


@pytest.mark.parametrize("heading", ["## The app", "## Functions", "## The client"])
def test_the_python_api_imports_as_written(heading: str) -> None:
    documented = headings(section(PYTHON_API, heading), 3)
    assert documented
    for entry in documented:
        dotted, parenthesis, arguments = entry.partition("(")
        target = resolve(dotted)
        if parenthesis:
            assert bare(inspect.signature(target)) == f"({arguments}", entry


def test_the_management_commands_are_the_packages() -> None:
    documented = {
        entry.split()[0] for entry in headings(section(PYTHON_API, "## Management commands"), 3)
    }
    commands = {
        path.stem
        for path in (PACKAGE / "management" / "commands").glob("*.py")
        if not path.stem.startswith("_")
    }
    assert documented == commands
    assert {get_commands()[command] for command in commands} == {"live_notifications"}


def test_the_programs_are_the_console_scripts() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(headings(section(PYTHON_API, "## Programs"), 3)) == set(scripts)


# The metrics.

METRICS = REFERENCE / "metrics.md"


def exported(exposition: str) -> dict[str, tuple[str, set[str]]]:
    """Each metric of an exposition: its type and its labels' names."""
    kinds = dict(re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.M))
    labels: dict[str, set[str]] = {name: set() for name in kinds}
    for line in exposition.splitlines():
        if line.startswith("#"):
            continue
        sample = line.split(" ")[0]
        name = next(
            name
            for name in kinds
            if re.match(rf"{re.escape(name)}(_bucket|_sum|_count)?(\{{|$)", sample)
        )
        labels[name] |= set(re.findall(r'(\w+)="', sample))
    return {name: (kinds[name], labels[name]) for name in kinds}


EXPOSITIONS = {
    "## web": lambda: web_metrics.exposition(),
    "## broadcaster": lambda: BroadcasterMetrics().render(
        connections=0, pending=0, ready=True, max_connections=1, waiting=0
    ),
    "## relay": lambda: RelayMetrics().render(ready=True, leader=True),
}


@pytest.mark.parametrize("heading", sorted(EXPOSITIONS))
def test_the_metrics_tables_are_what_each_program_exports(heading: str) -> None:
    documented = {
        only(row["metric"]): (row["type"], set(spans(row["labels"])))
        for row in table(METRICS, heading)
    }
    assert documented == exported(EXPOSITIONS[heading]())


def test_every_module_that_exports_metrics_is_in_the_reference() -> None:
    exporting = {
        str(path.relative_to(PACKAGE))
        for path in python_files(PACKAGE)
        if "prometheus.render(" in path.read_text()
    }
    assert exporting == {"metrics.py", "broadcaster/metrics.py", "relay/metrics.py"}, (
        "a module exports metrics that EXPOSITIONS (and docs/reference/metrics.md) don't know"
    )


def test_the_auth_failure_reasons_are_the_broadcasters() -> None:
    reasons = {
        value
        for call in calls(PACKAGE / "broadcaster" / "server.py")
        if isinstance(call.func, ast.Attribute) and call.func.attr == "_auth_failed"
        for node in ast.walk(call.args[0])
        if (value := literal(node)) is not None
    }
    assert "invalid" in reasons, reasons  # the reading works
    assert {only(row["reason"]) for row in table(METRICS, "## broadcaster", 1)} == reasons


# Links and commands, in every page.

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for line in prose(path.read_text()):
        if match := HEADING.match(line):
            anchor = base = slug(match[2])
            count = 0
            while anchor in found:  # repeated headings get -1, -2...
                count += 1
                anchor = f"{base}-{count}"
            found.add(anchor)
    return found


def links(path: Path) -> Iterator[str]:
    """The link targets of ``path``'s prose, inline code aside."""
    for line in prose(path.read_text()):
        yield from LINK.findall(CODE_SPAN.sub("", line))


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_leads_somewhere(page: Path) -> None:
    for target in links(page):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        location, _, anchor = target.partition("#")
        destination = (page.parent / location).resolve() if location else page
        assert destination.exists(), f"{target}: no such file"
        if anchor:
            assert destination.suffix == ".md", f"{target}: an anchor in a file that isn't Markdown"
            assert anchor in anchors(destination), f"{target}: no such heading"


def make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z0-9_-]+):(?!=)", (ROOT / "Makefile").read_text(), re.M))


def commands(path: Path) -> Iterator[str]:
    """Inline code and console lines of ``path``: where commands are written."""
    fenced = None
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            fenced = None if fenced is not None else line.strip()[3:]
        elif fenced == "console" and line.lstrip().startswith("$ "):
            yield line.lstrip()[2:]
        elif fenced is None:
            yield from CODE_SPAN.findall(line)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_make_target_named_exists(page: Path) -> None:
    targets = make_targets()
    assert {"up", "test", "help"} <= targets, targets  # the reading works
    for command in commands(page):
        for target in re.findall(r"(?:^|[\s;(])make ([a-z][a-z0-9-]*)", command):
            assert target in targets, f"{command!r}: the Makefile has no target {target!r}"
