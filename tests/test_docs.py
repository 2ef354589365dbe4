"""Every registered method is documented, with its published recipe and results and their sources; the recipes
the docs name exist; the README's count table matches the code."""

import re
from pathlib import Path

import pytest

import vitune
from vitune.cli import _vit_b16_count
from vitune.train import builtin_recipes, load_recipe

ROOT = Path(__file__).resolve().parent.parent
PAGES = {p.stem: p.read_text() for p in (ROOT / "docs" / "methods").glob("*.md")}
DOCS = {p.relative_to(ROOT): p.read_text() for p in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]}
# The two sections every method page carries (the names are used on every page).
RECIPE, RESULTS = "Published recipe", "Published results"


def page_of(method: str) -> str:
    """The page that documents a method: docs/methods/<method>.md, or the page naming it as `method`."""
    if method in PAGES:
        return PAGES[method]
    return next(text for text in PAGES.values() if f"`{method}`" in text)


def section(text: str, title: str) -> str:
    """The body of the '## title' section of a page ('' when the page has none)."""
    match = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    return match.group(1) if match else ""


@pytest.mark.parametrize("method", vitune.methods())
def test_method_has_a_docs_page(method):
    assert method in PAGES or any(f"`{method}`" in text for text in PAGES.values())


@pytest.mark.parametrize("page", sorted(PAGES))
def test_method_page_has_published_recipe_and_results_with_sources(page):
    recipe, results = section(PAGES[page], RECIPE), section(PAGES[page], RESULTS)
    assert recipe.strip(), f"docs/methods/{page}.md has no '## {RECIPE}' section"
    assert results.strip(), f"docs/methods/{page}.md has no '## {RESULTS}' section"
    for title, body in ((RECIPE, recipe), (RESULTS, results)):
        assert "Source" in body, f"docs/methods/{page}.md, '{title}': no source named"
    # The learning rate decides the result: every page says which one the authors used (or that none exists).
    assert re.search(r"learning rate", recipe, re.I), f"docs/methods/{page}.md, '{RECIPE}': no learning rate"


@pytest.mark.parametrize("name", builtin_recipes())
def test_every_builtin_recipe_is_shown_on_its_method_page(name):
    method = load_recipe(name).values["method"]
    assert f"--recipe {name}" in section(page_of(method), RECIPE), (
        f"the recipe {name} ships with vitune, but the '{RECIPE}' section of {method}'s page has no command using it")


def test_recipes_named_in_the_docs_exist():
    named = {(str(path), name) for path, text in DOCS.items()
             for name in re.findall(r"--recipe[ =]([a-z0-9_]+)(?![\w./-])", text)}
    unknown = sorted((path, name) for path, name in named if name not in builtin_recipes())
    assert not unknown, f"recipes the docs name but vitune does not ship: {unknown}"


def test_readme_count_table_matches_the_code():
    rows = re.findall(r"^\| `(\w+)` \| (yes|no) \| ([\d,]+) \|", (ROOT / "README.md").read_text(), re.M)
    assert {name for name, _, _ in rows} == set(vitune.methods())
    for name, mergeable, count in rows:
        assert (mergeable == "yes") == vitune.is_mergeable(name), name
        assert int(count.replace(",", "")) == _vit_b16_count(name), name


@pytest.mark.parametrize("name", vitune.__all__)
def test_every_public_name_is_on_the_api_page(name):
    api = DOCS[Path("docs/api.md")]
    # in code: `vitune.name(...)`, `name`, or a call in a python block
    assert re.search(rf"(`|vitune\.){re.escape(name)}\b", api), f"vitune.{name} is public, but docs/api.md never names it"
