"""The one exception type for bad user input.

The CLI turns a `UserError` into a one-line message on stderr and exit code 2;
library code raises it for anything the user can fix (a missing file, a bad key,
an unknown task) and lets every other exception surface as a bug.
"""


class UserError(Exception):
    """Bad input the user can fix; the message is one line naming the problem and the fix."""

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))


class Interrupted(Exception):
    """The user pressed Ctrl-C (SIGINT): the command stopped at a safe point. `kept` says what is left
    to continue from (None: nothing); the CLI adds the command that continues, and exits 130."""

    def __init__(self, done: str, kept: str | None):
        super().__init__(done)
        self.done, self.kept = done, kept
