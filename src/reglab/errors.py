"""The one error type users see: a single line (what, where, what to do), exit code 2."""


class UserError(Exception):
    """A problem with the user's input or environment, not a bug in reglab.

    The CLI prints `reglab: <message>` on stderr and exits with code 2, no traceback.
    """

    exit_code = 2


class BadImageError(UserError):
    """An image file that cannot be decoded; names the file."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(
            f"cannot decode image {self.path}: {reason}; fix or remove it, or pass --on-bad-image skip"
        )
