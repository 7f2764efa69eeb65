"""The one error type a user sees: a single line, exit code 2."""


class UserError(Exception):
    """Bad input from the user (suite, model path, plugin name, CSV).

    The message must fit on one line and name the offending field and what is allowed.
    """

    exit_code = 2

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")
