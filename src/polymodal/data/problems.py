"""Bad input is counted, not fatal: each problem names the row, column, file and reason."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


class BadInputError(ValueError):
    """Raised for input the run cannot use at all (or for any problem under --strict)."""


class DecodeError(ValueError):
    """A decoder could not turn one file or cell into features; the message is the reason."""


@dataclass(frozen=True)
class Problem:
    row: int
    column: str
    path: str | None
    reason: str
    table: str = ""

    def describe(self) -> str:
        where = f"{self.table}: " if self.table else ""
        where += f"row {self.row}, column '{self.column}'"
        if self.path:
            where += f", file {self.path}"
        return f"{where}: {self.reason}"


@dataclass
class ProblemLog:
    """Collects problems while a table is read. With `strict`, the first one raises."""

    strict: bool = False
    table: str = ""  # the table being read, named in each problem
    problems: list[Problem] = field(default_factory=list)

    def add(self, row: int, column: str, path: str | None, reason: str) -> None:
        problem = Problem(row, column, path, reason, self.table)
        if self.strict:
            raise BadInputError(problem.describe())
        self.problems.append(problem)

    def __len__(self) -> int:
        return len(self.problems)

    def counts(self) -> dict[str, int]:
        """Problems per column."""
        out: dict[str, int] = {}
        for problem in self.problems:
            out[problem.column] = out.get(problem.column, 0) + 1
        return out

    def to_json(self) -> list[dict]:
        return [asdict(problem) for problem in self.problems]
