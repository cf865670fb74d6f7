"""The error users see: one line that says what to do. The command line prints it and exits
non-zero, the Python API raises it, the studio shows it in the page."""


class VQError(ValueError):
    """An error caused by the user's input (a ValueError, as a bad argument is)."""

    exit_code = 1


class Interrupted(VQError):
    """Ctrl-C or SIGTERM during training, after the state was saved."""

    exit_code = 130
