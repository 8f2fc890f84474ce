"""Remove credentials from text before it reaches a log, the run's event log, asset metadata or an error message.

:func:`redact` is the one function for this; it replaces with ``***``:

- the user:password part of URLs, with a scheme (``http://user:pass@host:9200`` -> ``http://***@host:9200``)
  or without one (``user:pass@host:9200``, which opensearch-py also accepts), anywhere in the text;
- the values of the secret environment variables in :data:`SECRET_ENV_VARS` and of secrets passed to
  :func:`remember_secret` (a password set in code, or taken out of a URL), as written, percent-encoded, and
  base64-encoded in a basic-auth header with any known user name;
- HTTP credentials: the value of an ``Authorization:`` header, ``Basic <base64 of user:password>``,
  ``Bearer <token>`` (a token with a digit, 12 characters or more), AWS SigV4 ``Signature=<hex>``;
- the values of query parameters that carry credentials (``password=``, ``token=``, ``api_key=``,
  ``X-Amz-Security-Token=``, ``X-Amz-Signature=``, ...).

Secret values shorter than :data:`MIN_SECRET_CHARS` are not searched for (every such substring of ordinary
text would be replaced); the URL, header and query-parameter rules still apply to them.

Strings are redacted; lists, tuples and dicts (metadata values) are redacted item by item, keys too; other
values are returned unchanged. :func:`redacted_errors` turns an exception whose text (or a cause's) holds a
credential into a :class:`RedactedError` without the original chain, keeping the traceback.

Pure logic: nothing here imports Dagster or boto3.
"""
from __future__ import annotations

import base64
import os
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
SECRET_ENV_VARS = ("OPENSEARCH_PASSWORD", "FINETUNE_OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
USERNAME_ENV_VARS = ("OPENSEARCH_USERNAME",)  # user names that prefix a password in a basic-auth header
MIN_SECRET_CHARS = 4

# scheme://userinfo@ : the userinfo runs up to the last "@" before the host (a raw "@" in a password is
# common); quotes, brackets and whitespace end it so JSON and Python reprs are not swallowed.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^\s/?#\"'<>\[\]{}\\]*@")
# user:password@host without a scheme (opensearch-py reads "admin:pw@localhost:9200" as a host).
_BARE_USERINFO = re.compile(r"(?<![\w:/@.\-])[^\s/?#\"'<>\[\]{}\\:@,;=]+:[^\s/?#\"'<>\[\]{}\\@]+@(?=[A-Za-z0-9\[])")
_AUTHORIZATION = re.compile(r"(?P<key>\b(?:proxy-)?authorization['\"]?\s*[:=]\s*['\"]?)[^'\"\r\n,}]+", re.IGNORECASE)
_BASIC = re.compile(r"(?P<kind>\bBasic\s+)(?P<token>[A-Za-z0-9+/]{6,}={0,2})")
_BEARER = re.compile(r"(?P<kind>\bBearer\s+)(?P<token>[A-Za-z0-9._~+/\-]{12,}=*)")
_SIGV4 = re.compile(r"(?P<key>\bSignature=)[0-9a-fA-F]{16,}")
_SECRET_PARAMS = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|secret|token|access_token|api[_-]?key|apikey|client_secret|"
    r"x-amz-security-token|x-amz-signature|x-amz-credential|sig|signature)=)[^&\s\"'<>#]+",
    re.IGNORECASE)

_lock = threading.Lock()
_remembered: set[str] = set()
_remembered_users: set[str] = set()


class RedactedError(RuntimeError):
    """An error whose text (and its causes' text) held a credential; the message is the redacted chain."""


def remember_secret(value: str | None, *, username: str | None = None) -> None:
    """Redact `value` from now on in this process (a password given in code or read from a URL).

    `username`, when given, is also used to find the base64 basic-auth form ``user:value``.
    """
    if value and len(value) >= MIN_SECRET_CHARS:
        with _lock:
            _remembered.add(value)
            if username:
                _remembered_users.add(username)


def _secret_values() -> tuple[list[str], list[str]]:
    with _lock:
        values = set(_remembered)
        users = set(_remembered_users)
    for name in SECRET_ENV_VARS:
        value = os.environ.get(name, "")
        if len(value) >= MIN_SECRET_CHARS:
            values.add(value)
    for name in USERNAME_ENV_VARS:
        if os.environ.get(name):
            users.add(os.environ[name])
    return sorted(values, key=len, reverse=True), sorted(users)


def _forms(values: Iterable[str], users: Iterable[str]) -> Iterator[str]:
    """Each secret as written, percent-encoded, and base64-encoded as basic auth with each known user."""
    users = list(users)
    for value in values:
        yield value
        for encoded in (quote(value, safe=""), quote_plus(value, safe="")):
            if encoded != value:
                yield encoded
        for user in users:
            yield base64.b64encode(f"{user}:{value}".encode()).decode("ascii")


def _is_basic_credential(token: str) -> bool:
    """Whether `token` is base64 of "user:password" (so "Basic authentication" in prose stays as it is)."""
    try:
        decoded = base64.b64decode(token + "=" * (-len(token) % 4), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return False
    return ":" in decoded and decoded.isprintable()


def _redact_text(text: str, forms: list[str]) -> str:
    for form in forms:
        if form in text:
            text = text.replace(form, MASK)
    text = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    text = _BARE_USERINFO.sub(f"{MASK}@", text)
    text = _AUTHORIZATION.sub(lambda m: f"{m.group('key')}{MASK}", text)
    text = _BASIC.sub(lambda m: f"{m.group('kind')}{MASK}" if _is_basic_credential(m.group("token")) else m.group(0),
                      text)
    text = _BEARER.sub(lambda m: f"{m.group('kind')}{MASK}" if any(c.isdigit() for c in m.group("token"))
                       else m.group(0), text)
    text = _SIGV4.sub(lambda m: f"{m.group('key')}{MASK}", text)
    return _SECRET_PARAMS.sub(lambda m: f"{m.group('key')}{MASK}", text)


def _redact_any(value: Any, forms: list[str]) -> Any:
    if isinstance(value, str):
        return _redact_text(value, forms)
    if isinstance(value, dict):
        return {_redact_any(k, forms): _redact_any(v, forms) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_any(v, forms) for v in value]
    if isinstance(value, tuple):
        return tuple(_redact_any(v, forms) for v in value)
    return value


def redact(value: Any, secrets: Iterable[str | None] = ()) -> Any:
    """`value` with every credential replaced by ``***`` (see the module docstring for what counts).

    `secrets`: further values to remove from this one call (shorter than MIN_SECRET_CHARS are ignored).
    """
    values, users = _secret_values()
    extra = [s for s in secrets if s and len(s) >= MIN_SECRET_CHARS]
    forms = sorted(set(_forms([*values, *extra], users)), key=len, reverse=True)  # longest first
    return _redact_any(value, forms)


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes (explicit, else implicit context), outermost first, without loops."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not e for e in seen):
        seen.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return seen


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


@contextmanager
def redacted_errors() -> Iterator[None]:
    """Re-raise an exception whose text, or any cause's, holds a credential as a :class:`RedactedError`.

    The new error's message is the redacted chain ("Type: message; caused by Type: message"); the original
    exceptions are not chained (their text is what leaked), but the traceback is kept. Errors without a
    credential propagate unchanged.
    """
    try:
        yield
    except Exception as exc:
        chain = _chain(exc)
        texts = [_describe(e) for e in chain]
        cleaned = redact(texts)
        if cleaned == texts:
            raise
        raise RedactedError("; caused by ".join(cleaned)).with_traceback(exc.__traceback__) from None
