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


def user_frame(err: BaseException) -> str | None:
    """Where in the user's own code ``err`` was raised: `` at FILE:LINE in FUNC: SOURCE`` for
    the innermost frame of its traceback outside placerl, the standard library and installed
    packages (else the innermost outside placerl), or None. A reward function that raises is
    reported as one line, so this line stands in for the traceback the user would have read."""
    import sysconfig
    import traceback
    from pathlib import Path

    ours = str(Path(__file__).resolve().parent)
    libraries = {sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib")}
    frames = [
        f
        for f in traceback.extract_tb(err.__traceback__)
        if not str(Path(f.filename).resolve()).startswith(ours)
    ]
    own = [f for f in frames if not any(f.filename.startswith(lib) for lib in libraries)]
    frame = (own or frames or [None])[-1]
    if frame is None:
        return None
    source = f": {frame.line.strip()}" if frame.line else ""
    return f" at {frame.filename}:{frame.lineno} in {frame.name}{source}"
