"""Errors a user can fix.

Anything raised as `CompressError` is printed by the CLI as one line (exit code 2) with no traceback
unless `--debug` is given. The message must say what is wrong *and* what to do about it.
"""


class CompressError(Exception):
    """A problem with the user's input (recipe, data, model, cache) rather than a bug in compress."""


class Interrupted(CompressError):
    """The user stopped a run (Ctrl-C); a search must stop too rather than count it as a failed trial."""


def first_line(e: BaseException) -> str:
    """An exception's first message line (its type name when it has no message): libraries' errors run to pages,
    and a CompressError is one line."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
