"""Every link and repository path in README.md and docs/**/*.md resolves inside the repository.

- Markdown links and images, ``[text](target)`` and ``[id]: target``: a relative target must exist (relative to
  the page); ``target#anchor`` and ``#anchor`` must name a heading of the target page (GitHub's anchor slugs).
  External ``http(s)``/``mailto`` links are not checked: the tests run offline.
- Backticked repository paths, `` `src/...` ``, `` `docs/...` ``, `` `tests/...` ``, `` `benchmarks/...` ``,
  `` `scripts/...` `` (also inside a command such as `` `python benchmarks/train_step.py` ``): the file or folder
  must exist; a glob must match something; a placeholder (``<family>``, ``{a,b}``, ``...``) is checked up to the
  folder before it. A path in another repository is written with its owner and name in front
  (``luogen1996/RepAdapter/scripts/exp.sh``) and is not checked.
- The pages stand on their own: none points to the project's internal specification (``methods.md``, ``§``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# A path of this repository inside a code span; not one preceded by a word, a slash or a colon (another
# repository's path such as owner/repo/scripts/x.sh, or repo:scripts/x.sh).
REPO_PATH = re.compile(r"(?<![\w.\-/:~$@])(?:\./)?((?:src|docs|tests|benchmarks|scripts)/[^\s`'\"(),;|]*)")
PLACEHOLDER = re.compile(r"[<{]|\.\.\.")
EXTERNAL = ("http://", "https://", "mailto:", "ftp://")
FORBIDDEN = ("methods.md", "§")


def _prose_lines(page: Path) -> list[tuple[int, str]]:
    """(line number, text) of the lines outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text, lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"(`+)(.+?)\1", r"\2", heading)  # code spans keep their text
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links keep their text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in _prose_lines(page):
        found.update(HTML_ANCHOR.findall(line))
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def _link_problem(page: Path, target: str) -> str | None:
    if target.startswith(EXTERNAL):
        return None
    path_part, _, anchor = target.partition("#")
    path = (page.parent / unquote(path_part)).resolve() if path_part else page
    try:
        path.relative_to(ROOT)
    except ValueError:
        return f"link {target!r} leaves the repository"
    if not path.exists():
        return f"link {target!r}: {path.relative_to(ROOT)} does not exist"
    if anchor:
        if path.suffix != ".md" or path.is_dir():
            return f"link {target!r}: an anchor needs a Markdown page"
        if unquote(anchor).lower() not in anchors(path):
            return f"link {target!r}: {path.relative_to(ROOT)} has no heading with anchor #{anchor}"
    return None


def _path_problem(text: str) -> str | None:
    path = re.sub(r"::.*$|:\d+(?::\d+)?$", "", text).rstrip(".:")  # pytest node ids, line numbers
    placeholder = PLACEHOLDER.search(path)
    if placeholder:  # check the folder before the placeholder
        path = path[: placeholder.start()].rpartition("/")[0]
    if any(c in path for c in "*?["):
        return None if any(ROOT.glob(path)) else f"path `{text}` matches no file"
    return None if (ROOT / path).exists() else f"path `{text}` does not exist"


def problems(page: Path) -> list[str]:
    found = []
    text = page.read_text()
    for forbidden in FORBIDDEN:
        for number, line in enumerate(text.splitlines(), 1):
            if forbidden in line:
                found.append(f"{number}: mentions {forbidden!r}, which is not part of the repository")
    for number, line in _prose_lines(page):
        targets = INLINE_LINK.findall(CODE_SPAN.sub("", line)) + REFERENCE_LINK.findall(line)
        for target in targets:
            problem = _link_problem(page, target)
            if problem:
                found.append(f"{number}: {problem}")
        for _, code in CODE_SPAN.findall(line):
            for path in REPO_PATH.findall(code):
                problem = _path_problem(path)
                if problem:
                    found.append(f"{number}: {problem}")
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_and_paths_resolve(page):
    found = problems(page)
    assert not found, f"{page.relative_to(ROOT)}:\n  " + "\n  ".join(found)


def test_the_checker_catches_what_it_should(tmp_path, monkeypatch):
    """Guard against a checker that passes everything: every kind of bad reference is reported."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other page\n\n## A `code` heading, with (punctuation)\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# Title\n"
        "[ok](other.md) [ok](other.md#a-code-heading-with-punctuation) [ok](#title) [web](https://x.org/a.md)\n"
        "`docs/other.md` `docs/` `luogen1996/RepAdapter/scripts/exp.sh` `docs/<name>.md` `docs/*.md`\n"
        "[bad](missing.md) [bad](other.md#nowhere) [bad](#nowhere)\n"
        "`docs/missing.md` `python scripts/missing.py` `tests/*.py`\n"
        "see methods.md §1\n"
        "```\n[in code](missing2.md)\n```\n"
    )
    found = problems(page)
    assert len(found) == 8, "\n".join(found)
    assert all(f.startswith(("4:", "5:", "6:")) for f in found), "\n".join(found)
