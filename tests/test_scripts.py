"""The recipes in scripts/ stay recipes: every pick is a `rank` command (library code), and every pointer their
headers and the reproduction spec make (a doc's section, a script, a doc) leads somewhere."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT

SCRIPTS = sorted((ROOT / "scripts").glob("*.sh")) + sorted((ROOT / "scripts").glob("*.toml"))
SECTION = re.compile(r'(README(?:\.md)?|docs/[\w-]+\.md)[ ,(]+"([^"]+)"')
FILE = re.compile(r"\b((?:docs|scripts)/[\w-]+\.(?:md|sh|toml))\b")
SELECTION = ("max(", "min(", "sorted(", "exit !(")  # inline Python picking a maximum; awk comparing scores


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_no_pick_is_made_inside_a_script(script):
    found = [f"line {i}: {line.strip()}" for i, line in enumerate(script.read_text().splitlines(), 1)
             if any(s in line for s in SELECTION)]
    assert not found, f"{script.name} picks in shell (make it a rank command, ranker/train/select.py): {found}"


def headings(doc: str) -> list[str]:
    path = ROOT / ("README.md" if doc.startswith("README") else doc)
    return [line.lstrip("#").strip() for line in path.read_text().splitlines() if line.startswith("#")]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_pointer_leads_somewhere(script):
    text = script.read_text()
    for doc, section in SECTION.findall(text):
        assert any(h.startswith(section) for h in headings(doc)), f"{script.name}: {doc} has no section {section!r}"
    for path in FILE.findall(text):
        assert (ROOT / path).is_file(), f"{script.name} points to {path}, which is not there"


def test_the_pointer_forms_are_read():
    assert SECTION.findall('see README ("Teacher"), docs/experiments.md, "Your own collection"') == [
        ("README", "Teacher"), ("docs/experiments.md", "Your own collection")]
    assert "README" not in [h.split()[0] for h in headings("README.md") if h.startswith("Teacher")]
