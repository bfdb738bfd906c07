"""User-facing error types. The CLI turns each into one line on stderr and an exit code."""


class TACEResponseError(Exception):
    """Base class: an error whose message is fit to show a user as it is."""

    exit_code = 1


class InputError(TACEResponseError):
    """Bad input or usage: the message names the file and the problem (exit code 2)."""

    exit_code = 2

    def __init__(self, path, problem):
        self.path = str(path) if path is not None else None
        self.problem = problem
        super().__init__("{}: {}".format(self.path, problem) if self.path else problem)


class ModelError(TACEResponseError):
    """Missing, corrupt or tampered model package (exit code 3)."""

    exit_code = 3
