"""The one error type a user can cause. The CLI turns it into a one-line message and exit code 2."""


class UserError(ValueError):
    """Bad input from the user: a config key, a path, a data file, a CLI flag. The message names it."""
