"""CSV files the product writes for programs and people to read back: a prepared dataset's manifest.csv and
errors.csv, an evaluation's scores.csv and files.csv."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any, TextIO


class CsvRows:
    """Rows of CSV, each ended by "\\n". csv quotes a field for the line ends it writes, "\\n" alone: a file's
    name holding a bare carriage return went out unquoted, and every reader split its row there (the dataset's
    manifest could not be read again: "malformed manifest"). A row with such a field is written with every
    field quoted; the others as before."""

    def __init__(self, handle: TextIO) -> None:
        self._plain = csv.writer(handle, lineterminator="\n")
        self._quoted = csv.writer(handle, lineterminator="\n", quoting=csv.QUOTE_ALL)

    def writerow(self, row: Iterable[Any]) -> None:
        cells = list(row)
        holds_return = any(isinstance(cell, str) and "\r" in cell for cell in cells)
        (self._quoted if holds_return else self._plain).writerow(cells)

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)
