"""Errors that the CLI turns into one-line messages (file + reason, no traceback)."""

from __future__ import annotations

from os import PathLike


def redact_url(path: str) -> str:
    """No query string, fragment or user:password of a URL in a message (signed URLs carry tokens)."""
    if "://" not in path or path.startswith("file://"):
        return path
    from urllib.parse import urlsplit, urlunsplit

    u = urlsplit(path)
    host = (u.hostname or "") + (f":{u.port}" if u.port else "")
    return urlunsplit((u.scheme, host, u.path, "", ""))


class InputError(Exception):
    """Bad input: names the offending file and the reason in one line."""

    def __init__(self, path: str | PathLike | None, reason: str):
        self.path = None if path is None else redact_url(str(path))
        self.reason = " ".join(str(reason).split())  # always one line
        super().__init__(self.__str__())

    def __reduce__(self):  # survives the trip back from a worker process
        return (type(self), (self.path, self.reason))

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason
