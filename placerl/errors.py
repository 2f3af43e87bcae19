"""User-facing errors.

Anything a user can get wrong (config, data, paths, resources, a reward function) raises
``UserError``. The CLI catches it at the edge and prints one message with exit code 2, never a
traceback. ``where`` says where the problem is: a file, ``file:line``, a config key, a row.
"""

from __future__ import annotations


class UserError(Exception):
    """An error the user can fix; the message says what is wrong and where."""

    exit_code = 2

    def __init__(self, message: str, where: str | None = None):
        self.message = message
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)
