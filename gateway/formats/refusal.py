"""The one error of gateway/formats: a document that is not read, and where it went wrong."""

from __future__ import annotations


class DocumentRefused(ValueError):
    """Malformed, too deep, or using a refused feature (a DTD). `line` and `column` (both
    from 1) say where, when the parser knows."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column

    def located(self) -> str:
        """The message with its place, e.g. `line 3, column 7: mismatched tag`."""
        if self.line is None:
            return self.message
        return f"line {self.line}, column {self.column}: {self.message}"
