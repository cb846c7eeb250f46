"""Exceptions that carry a one-line message for the user (bad input, bad files, bad arguments).

CLI entry points and nodes print ``str(exc)`` of a :class:`UserError` as one line, never a
traceback; anything else escaping is a bug.
"""


class UserError(Exception):
    """A problem with the user's input: a path, an argument, a file's contents."""


class FileFormatError(UserError):
    """A file we read is truncated, corrupted, of the wrong version or the wrong kind."""

    def __init__(self, path, problem):
        super().__init__(f'{path}: {problem}')
        self.path = path
        self.problem = problem
