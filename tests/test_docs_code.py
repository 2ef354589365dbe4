"""Every ```python block of README.md and docs/**/*.md runs, as written.

The blocks of one page run in order in one namespace (a later block may use what an earlier one defined), in a
scratch working directory. A block that cannot run offline (it downloads pretrained weights, say) carries an
HTML comment ``<!-- not run: reason -->`` on the line right before its fence: it is reported as skipped with
that reason (``pytest -rs`` lists them).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.*?)\s*-->")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the block's first code line
    code: str
    not_run: str | None  # the reason, for a block marked <!-- not run: ... -->

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def python_blocks(page: Path) -> list[Block]:
    lines = page.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            end = i + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            marker = NOT_RUN.search(lines[i - 1]) if i > 0 else None
            code = "\n".join(lines[i + 1 : end])
            blocks.append(Block(page, i + 2, code, marker.group(1) if marker else None))
            i = end
        i += 1
    return blocks


BLOCKS = [b for page in PAGES for b in python_blocks(page)]


class PageRun:
    """The namespace of one page's blocks, run in order; a block runs once, after those before it."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.namespace: dict = {"__name__": "__docs__"}
        self.done = 0
        self.failed: str | None = None

    def run_up_to(self, blocks: list[Block], index: int) -> None:
        while self.done <= index:
            block = blocks[self.done]
            self.done += 1
            if block.not_run is not None:
                continue
            if self.failed:
                raise AssertionError(f"{block.name}: not run, because an earlier block of the page failed: "
                                     f"{self.failed}")
            # Line numbers in tracebacks are the page's own.
            code = compile("\n" * (block.line - 1) + block.code, str(block.page), "exec")
            cwd = os.getcwd()
            os.chdir(self.folder)
            try:
                exec(code, self.namespace)
            except BaseException:
                self.failed = block.name
                raise
            finally:
                os.chdir(cwd)


@pytest.fixture(scope="module")
def page_runs(tmp_path_factory):
    runs: dict[Path, PageRun] = {}

    def get(page: Path) -> PageRun:
        if page not in runs:
            runs[page] = PageRun(tmp_path_factory.mktemp(page.stem))
        return runs[page]

    return get


@pytest.mark.parametrize("block", [pytest.param(b, id=b.name) for b in BLOCKS])
def test_docs_block_runs(block: Block, page_runs):
    if block.not_run is not None:
        pytest.skip(f"{block.name} not run: {block.not_run}")
    page_blocks = [b for b in BLOCKS if b.page == block.page]
    page_runs(block.page).run_up_to(page_blocks, page_blocks.index(block))


def test_not_run_blocks_say_why():
    for block in BLOCKS:
        assert block.not_run is None or block.not_run.strip(), f"{block.name}: <!-- not run: --> needs a reason"
    assert BLOCKS, "no python blocks found: the extraction is broken"
