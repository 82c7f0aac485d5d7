"""One exception type for bad input: the CLI prints it as one line and exits non-zero."""


class CMTAError(Exception):
    """Bad input or an unrecoverable condition, with a message meant for the user.

    The message names the file, key, row or column at fault and, where possible,
    what to do about it. The CLI prints ``cmta <command>: error: <message>``.
    """
