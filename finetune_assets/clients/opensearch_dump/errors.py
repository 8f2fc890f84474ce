"""The errors a dump raises, each naming what went wrong and what to check."""
from __future__ import annotations


class IndexDumpError(RuntimeError):
    """The dump could not be completed; the message says why and what to check."""


class IndexNotFoundError(IndexDumpError):
    """The index (or alias/pattern) does not exist."""


class EmptyIndexError(IndexDumpError):
    """The index has no documents (or none match the query)."""


class TextFieldError(IndexDumpError):
    """The text field(s) are not in any document."""


class AuthenticationError(IndexDumpError):
    """The cluster refused the credentials (HTTP 401/403) or no AWS credentials were found."""


class UnsupportedClusterError(IndexDumpError):
    """The cluster supports neither point-in-time search nor scroll."""


class Cancelled(Exception):
    """Another slice failed; this one stops quietly (never leaves the package)."""
