"""docs/errors.md is true: every row of its catalogue is triggered (tests/errors_catalogue.py) and raises a
VituneError with that row's exit code and a message matching the row's, and every trigger has a row."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from errors_catalogue import TRIGGERS
from vitune.errors import VituneError, exit_code

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
ROW = re.compile(r"^\| `(?P<id>\w+)` \| (?P<code>\d+) \| `(?P<message>.+?)` \|")


def catalogue() -> dict[str, tuple[int, str]]:
    """id -> (exit code, message template) of each row of the catalogue table."""
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            rows[match["id"]] = (int(match["code"]), match["message"])
    return rows


def pattern(template: str) -> re.Pattern:
    """The template as a regular expression: literal text, each <...> placeholder any text."""
    parts = re.split(r"<[^<>]*>", template)
    return re.compile(".+?".join(re.escape(part) for part in parts), re.DOTALL)


def test_every_trigger_has_a_row_and_every_row_a_trigger():
    assert set(catalogue()) == set(TRIGGERS)


@pytest.mark.parametrize("row", sorted(catalogue().items()), ids=lambda row: row[0])
def test_row_is_what_the_trigger_raises(row, tmp_path):
    name, (code, template) = row
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-backbone warning of the training rows
        with pytest.raises(VituneError) as caught:
            TRIGGERS[name](tmp_path)
    message = str(caught.value)
    assert pattern(template).fullmatch(message), f"docs/errors.md row {name}:\n  {template}\nraised:\n  {message}"
    assert exit_code(caught.value) == code
    assert not (tmp_path / "marker").exists()  # no file's content ran as code
