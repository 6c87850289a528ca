"""Errors that mean 'the user asked for something we cannot do': the CLI prints them, no traceback."""


class UserError(Exception):
    """Bad input from the user (missing file, bad option, truncated archive...). The message says
    what went wrong and, where possible, how to fix it."""


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; the message says how."""
