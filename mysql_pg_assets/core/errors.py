"""Errors a person can act on, as opposed to defects.

Each message names the file and key, the table, or the server (password masked) and says what to
do. The command line prints such an error as its one or two lines and exits 1; the code location
raises it so Dagster shows the message with as little around it as Dagster allows (see
``definitions``). Anything else is a defect and keeps its traceback.
"""


class ActionableError(Exception):
    """A configuration, connection, privilege or spec error; the message is all a person needs."""


class ConfigError(ActionableError, ValueError):
    """An environment variable holds something unusable (a URL that does not parse)."""
