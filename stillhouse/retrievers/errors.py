"""The one exception type for problems a user can fix (bad config, data, model source)."""


class UserError(Exception):
    """A problem with the user's input, reported as one line naming the file and the fix.

    The CLI prints ``error: <message>`` and exits with code 2, without a traceback.
    """
