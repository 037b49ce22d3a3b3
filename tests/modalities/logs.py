"""Problems a log holds, by row."""

from polymodal.data.problems import ProblemLog


def reasons(log: ProblemLog) -> dict[int, str]:
    return {problem.row: problem.reason for problem in log.problems}
