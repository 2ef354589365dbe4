"""Every registered method is documented, and the README's count table matches the code."""

import re
from pathlib import Path

import pytest

import vitune
from vitune.cli import _vit_b16_count

ROOT = Path(__file__).resolve().parent.parent
PAGES = {p.stem: p.read_text() for p in (ROOT / "docs" / "methods").glob("*.md")}


@pytest.mark.parametrize("method", vitune.methods())
def test_method_has_a_docs_page(method):
    assert method in PAGES or any(f"`{method}`" in text for text in PAGES.values())


def test_readme_count_table_matches_the_code():
    rows = re.findall(r"^\| `(\w+)` \| (yes|no) \| ([\d,]+) \|", (ROOT / "README.md").read_text(), re.M)
    assert {name for name, _, _ in rows} == set(vitune.methods())
    for name, mergeable, count in rows:
        assert (mergeable == "yes") == vitune.is_mergeable(name), name
        assert int(count.replace(",", "")) == _vit_b16_count(name), name
