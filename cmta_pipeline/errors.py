"""One exception type for bad input: the CLI prints it as one line and exits non-zero."""


class CMTAError(Exception):
    """Bad input or an unrecoverable condition, with a message meant for the user.

    The message names the file, key, row or column at fault and, where possible,
    what to do about it. The CLI prints ``cmta <command>: error: <message>``.
    """


def load_refused(path, exc: Exception, what: str = "file") -> CMTAError:
    """The one-line error of a ``torch.load(weights_only=True)`` that failed. A pickle
    asking for code (a class, a function) is named by what it asks for, without torch's
    advice to load it with ``weights_only=False``: the pipeline never runs a file's code."""
    import re

    text = str(exc)
    if "Weights only load failed" in text or "Unsupported global" in text:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        asks = f" (it asks for {found.group(1)})" if found else ""
        return CMTAError(f"{path}: not a plain state dict; refusing to unpickle{asks}")
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return CMTAError(f"{path}: not a readable {what} ({type(exc).__name__}{': ' + first if first else ''})")
