"""The README's "Add it to your Django project", as steps a test can follow.

The test reads the steps from the README rather than repeating them, so that
the docs can't drift from what works: a block the test doesn't find, or a
command it doesn't know how to follow, fails it.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import textwrap
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Add it to your Django project"


@dataclasses.dataclass(frozen=True)
class Steps:
    #: Appended to the project's settings.py, and to its urls.py.
    settings: str
    urls: str
    #: The shell commands, in order, without the prompt.
    commands: list[list[str]]


def section(text: str) -> str:
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end != -1 else None]


def blocks(text: str) -> list[tuple[str, str, str]]:
    """The fenced blocks of ``text``: the line before each (which says where it
    goes), its language, and its body, dedented."""
    found = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        opening = line.strip()
        if opening.startswith("```") and len(opening) > 3:
            indent = line[: len(line) - len(line.lstrip())]
            end = lines.index(f"{indent}```", index + 1)
            before = next((text for text in reversed(lines[:index]) if text.strip()), "")
            body = textwrap.dedent("\n".join(lines[index + 1 : end]))
            found.append((before, opening[3:], body))
            index = end
        index += 1
    return found


def steps(text: str | None = None) -> Steps:
    """The adoption steps of the README (or of ``text``)."""
    python: dict[str, str] = {}
    commands: list[list[str]] = []
    for before, language, body in blocks(section(text or README.read_text())):
        if language == "console":
            commands += [
                shlex.split(line[2:]) for line in body.splitlines() if line.startswith("$ ")
            ]
        elif language == "python":
            where = re.search(r"`(settings\.py|urls\.py)`", before)
            assert where, f"a Python block that doesn't say where it goes: {before!r}"
            python[where[1]] = body + "\n"
    return Steps(settings=python["settings.py"], urls=python["urls.py"], commands=commands)
