"""The one exception type users see.

Anything raised as `TurkclipError` is a problem with the user's input or
environment (a missing file, a malformed captions file, an offline hub id).
The CLI prints its message as a single line and exits non-zero; everything
else is a bug and keeps its traceback.
"""


class TurkclipError(Exception):
    """A user-facing error: the message says what is wrong and how to fix it."""
