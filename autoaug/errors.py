"""Errors raised at the boundaries (user batches, op names, magnitudes, files).

Every error a user can cause is an `AutoaugInputError`: its message names the field (and the file,
where there is one) and the allowed values, and the CLI turns it into exit code 2 and one line.
"""

from __future__ import annotations


def one_line(text: str) -> str:
    """``text`` with its line breaks (any that `str.splitlines` knows) folded into single spaces."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


class AutoaugInputError(ValueError):
    """Bad input from a user: the message says what was wrong and what is allowed.

    The message is kept to one line whatever it quotes (a library's multi-line parse error, a YAML key
    holding a line break), so the CLI's one-line contract holds for every input error."""

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(one_line(str(message)), *args)


class ParameterError(AutoaugInputError):
    """A library call's argument out of range. The message starts with the Python parameter's name
    (``max_epochs: expected a positive integer, got 0``): a library user reads the name they passed,
    and the CLI, which knows which flag fed that parameter, shows the flag instead (``--max-epochs: ...``,
    `flag_message`)."""

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{parameter}: {problem}")
        self.parameter = parameter
        self.problem = one_line(problem)

    def flag_message(self, flag: str) -> str:
        """The same message with ``flag`` in place of the parameter's name."""
        return f"{flag}: {self.problem}"


class BatchValidationError(AutoaugInputError):
    """A `MultimodalBatch` field has the wrong shape, dtype or device, or an op needs a missing one."""


class UnknownOpError(AutoaugInputError, KeyError):
    """An op name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class OpArgumentError(AutoaugInputError):
    """A magnitude, an option or a params dict an op cannot accept."""


class AutoaugError(RuntimeError):
    """A run that cannot go on for a reason the user should read (not bad input): the CLI prints the
    message as one line and exits 1."""


class Interrupted(AutoaugError):
    """The user stopped a run (Ctrl-C): the CLI prints the message and exits 130, the shell's code for an
    interrupted command."""

    exit_code = 130
