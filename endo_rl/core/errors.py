"""The one error type a user can cause. The CLI turns it into a one-line message and exit code 2."""


class UserError(ValueError):
    """Bad input from the user: a config key, a path, a data file, a CLI flag. The message names it."""


class ReportedByMainProcess(UserError):
    """A UserError that every process of a multi-process run raises together (e.g. a checkpoint write error on
    one rank, gathered to all): the main process raises the plain UserError and prints it; the others exit
    with the same code, silently, so the run ends with one message."""
