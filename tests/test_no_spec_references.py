"""No file shipped under src/ points users to the project's internal specification.

That specification (``methods.md``, its sections written with ``§``) is not part of the repository, so a
docstring, message or recipe ``description`` citing it sends the reader to a file they cannot open. Sources are
named instead: the paper and table, the official repository's file, or a page under docs/. The docs pages have
the same check in tests/test_docs_links.py.

Every text file under src/ (.py, .yaml, .md, .txt) is read, hidden folders and caches included.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT_SUFFIXES = (".py", ".yaml", ".md", ".txt")
FORBIDDEN = ("methods.md", "§")

# Files whose owner is still rewriting them: their references are known and listed here until then. Once a
# file is clean, delete its line (test_allow_list_has_no_clean_files says which); the list should end empty.
ALLOWED: set[str] = set()


def text_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "src").rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)


def spec_references(root: Path) -> dict[str, list[str]]:
    """{path relative to root: ["line: mentions 'methods.md'", ...]} for every text file under src/."""
    found: dict[str, list[str]] = {}
    for path in text_files(root):
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        hits = [f"{number}: mentions {word!r}" for number, line in enumerate(lines, 1)
                for word in FORBIDDEN if word in line]
        if hits:
            found[path.relative_to(root).as_posix()] = hits
    return found


def test_src_names_sources_not_the_internal_specification():
    files = text_files(ROOT)
    assert len(files) > 100 and any(p.suffix == ".yaml" for p in files)  # the walk really sees the package
    found = {path: hits for path, hits in spec_references(ROOT).items() if path not in ALLOWED}
    report = "\n".join(f"{path}:{hit}" for path, hits in found.items() for hit in hits)
    assert not found, "cite the paper, the official repository's file or a docs page instead:\n" + report


def test_allow_list_has_no_clean_files():
    """An allowed file that no longer mentions the specification must leave the list, so it cannot regress."""
    referencing = spec_references(ROOT)
    clean = sorted(path for path in ALLOWED if path not in referencing)
    assert not clean, "no reference left: delete from ALLOWED in tests/test_no_spec_references.py: " + ", ".join(clean)


def test_the_checker_finds_what_it_should(tmp_path):
    """Guard against a checker that passes everything: each kind of file and mention is reported."""
    package = tmp_path / "src" / "pkg"
    (package / "recipes").mkdir(parents=True)
    (package / ".hidden").mkdir()
    (package / "a.py").write_text('"""Clean."""\nx = 1  # see methods.md 1.5\n')
    (package / "recipes" / "r.yaml").write_text("description: >\n  as in the official train.py (§1.6)\n")
    (package / ".hidden" / "notes.md").write_text("methods.md\n")
    (package / "b.txt").write_text("no reference\n")
    (package / "c.json").write_text('"methods.md"')  # not a text suffix the rule covers
    found = spec_references(tmp_path)
    assert found == {
        "src/pkg/.hidden/notes.md": ["1: mentions 'methods.md'"],
        "src/pkg/a.py": ["2: mentions 'methods.md'"],
        "src/pkg/recipes/r.yaml": ["2: mentions '§'"],
    }
