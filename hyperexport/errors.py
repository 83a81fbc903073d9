"""The one exception type for bad user input.

The CLI turns a `UserError` into a one-line message on stderr and exit code 2;
library code raises it for anything the user can fix (a missing file, a bad key,
an unknown task) and lets every other exception surface as a bug.
"""


class UserError(Exception):
    """Bad input the user can fix; the message is one line naming the problem and the fix."""

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))
