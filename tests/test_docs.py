"""The documentation points at files that exist: every relative link, and every backticked repository path
(`docs/x.md`, `bench/score_speed.py --compile`, `tests/test_report.py::test_name`), in README.md and docs/*.md."""

from __future__ import annotations

import re

import pytest

from helpers import ROOT

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
REPOSITORY_FOLDERS = ("docs/", "bench/", "src/", "tests/", "examples/", "../", "./")
FENCED_BLOCK = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)


def referenced_paths(text: str) -> list[tuple[str, bool]]:
    """(path, relative to the document's folder rather than the repository root) for each reference."""
    prose = FENCED_BLOCK.sub("", text)
    paths = []
    for target in LINK.findall(prose):
        if not re.match(r"^[a-z][a-z0-9+.-]*:|^#", target):  # not a URL (https:, mailto:) nor an anchor
            paths.append((target.split("#")[0], True))
    for code in INLINE_CODE.findall(prose):
        for word in code.split():
            if word.startswith(REPOSITORY_FOLDERS):
                paths.append((word.split("::")[0].split("#")[0], False))
    return paths


def test_the_checker_finds_links_and_paths():
    text = ("See [the notes](docs/design.md#contracts), ![plot](plot.png), [site](https://example.org), "
            "`bench/score_speed.py --compile`, `tests/test_docs.py::test_name`, `runs/proxy`.\n"
            "```bash\ns2l record --out docs/not-checked.md\n```\n")
    assert referenced_paths(text) == [("docs/design.md", True), ("plot.png", True),
                                      ("bench/score_speed.py", False), ("tests/test_docs.py", False)]


@pytest.mark.parametrize("document", DOCUMENTS, ids=[str(d.relative_to(ROOT)) for d in DOCUMENTS])
def test_every_referenced_path_exists(document):
    dead = []
    for path, relative_to_document in referenced_paths(document.read_text(encoding="utf-8")):
        base = document.parent if relative_to_document else ROOT
        if not (base / path).exists() or not (base / path).resolve().is_relative_to(ROOT):
            dead.append(path)
    assert not dead, f"{document.relative_to(ROOT)} points at what the repository does not hold: {dead}"
