"""Every ```python block in docs/sources/*.md, docs/migrating.md, docs/mixtures.md and docs/growing.md runs, so
the pages cannot drift from the code.

A block fenced ```python requires=MODULE shows another library's code (a "before" on the migration page): it
runs where that module is installed and is skipped, with the reason shown, where it is not.

Each block runs in a fresh namespace with the working directory (and ``tempfile``'s default directory)
set to pytest's ``tmp_path``. Blocks are compiled with the Markdown file's line numbers, so a traceback
points at the line of the page that failed. A page without a python block fails: examples cannot be
lost silently.
"""

from __future__ import annotations

import importlib.util
import re
import tempfile
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs" / "sources"
PAGES = [*sorted(DOCS.glob("*.md")), *(DOCS.parent / name for name in ("migrating.md", "mixtures.md", "growing.md"))]
EXPECTED_PAGES = {"arrays.md", "dataset.md", "imagefolder.md", "listing.md", "multimodal.md", "table.md", "text.md"}
FENCE = re.compile(r"^```python(?:[ \t]+requires=(\w+))?[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def python_blocks(page: Path) -> list[tuple[int, str, str | None]]:
    """(first line number, code, module it requires or None) of each ```python block of ``page``."""
    text = page.read_text(encoding="utf-8")
    return [(text.count("\n", 0, match.start(2)) + 1, match.group(2), match.group(1)) for match in FENCE.finditer(text)]


EXAMPLES = [
    pytest.param(page, line, code, requires, id=f"{page.stem}-block{number}")
    for page in PAGES
    for number, (line, code, requires) in enumerate(python_blocks(page), start=1)
]


def test_the_source_pages_exist() -> None:
    missing = EXPECTED_PAGES - {page.name for page in PAGES}
    assert not missing, f"docs/sources/ lacks {sorted(missing)}"


@pytest.mark.parametrize("page", PAGES, ids=[page.stem for page in PAGES])
def test_every_page_has_a_python_example(page: Path) -> None:
    assert python_blocks(page), f"{page} has no ```python block; every source page needs a runnable example"


@pytest.mark.parametrize(("page", "line", "code", "requires"), EXAMPLES)
def test_example_runs(
    page: Path, line: int, code: str, requires: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if requires is not None and importlib.util.find_spec(requires) is None:
        pytest.skip(f"{page.name} line {line} shows {requires}'s code, and {requires} is not installed here")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    # Pad with blank lines so that line numbers in a traceback are the page's own.
    compiled = compile("\n" * (line - 1) + code, str(page), "exec")
    exec(compiled, {"__name__": f"docs_example_{page.stem}"})
