"""CSV files of dataclass rows: write, read back with the field types, append as measured.

Field types come from the dataclass annotations: ``float | None`` and ``int | None``
fields are parsed as numbers (an empty cell is None), everything else stays text.
"""

import csv
import dataclasses
import typing
from pathlib import Path


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _number_type(annotation) -> type | None:
    """float or int for a numeric (optionally None-able) annotation, else None."""
    candidates = typing.get_args(annotation) or (annotation,)
    for kind in (float, int):
        if kind in candidates:
            return kind
    return None


def field_names(row_type: type) -> list[str]:
    return [field.name for field in dataclasses.fields(row_type)]


def _parsers(row_type: type) -> dict[str, type | None]:
    hints = typing.get_type_hints(row_type)
    return {name: _number_type(hints[name]) for name in field_names(row_type)}


def _record(row) -> dict[str, str]:
    return {name: _format(value) for name, value in dataclasses.asdict(row).items()}


def write_rows(path: Path, rows: list, row_type: type) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=field_names(row_type))
        writer.writeheader()
        for row in rows:
            writer.writerow(_record(row))


def read_rows(path: Path, row_type: type) -> list:
    parsers = _parsers(row_type)

    def parse(name: str, text: str | None):
        kind = parsers[name]
        if text in (None, ""):
            return None if kind is not None else ""
        return kind(float(text)) if kind is int else kind(text) if kind else text

    with path.open(newline="") as handle:
        return [
            row_type(**{name: parse(name, record.get(name)) for name in parsers})
            for record in csv.DictReader(handle)
        ]


class RowSink:
    """Appends rows to a CSV file as they are measured, so an interrupted run keeps them."""

    def __init__(self, path: Path, existing: list, row_type: type):
        self.path = path
        self.rows = list(existing)
        write_rows(path, self.rows, row_type)
        self._file = path.open("a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=field_names(row_type))

    def add(self, row) -> None:
        self.rows.append(row)
        self._writer.writerow(_record(row))
        self._file.flush()

    def close(self) -> None:
        self._file.close()
