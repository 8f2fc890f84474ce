"""core.redact: credentials in URLs, secret env values, auth headers and query strings become ***."""
from __future__ import annotations

import base64

import pytest

from finetune_assets.core.redact import MASK, RedactedError, redact, redacted_errors, remember_secret

ENV_SECRETS = {"OPENSEARCH_PASSWORD": "os-Pw!9876", "FINETUNE_OPENAI_API_KEY": "sk-test-4455abcd",
               "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG", "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEBYaD"}


@pytest.fixture
def secret_env(monkeypatch):
    for name, value in ENV_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OPENSEARCH_USERNAME", "reader")
    return ENV_SECRETS


@pytest.mark.parametrize("text, expected", [
    ("from http://admin:pa55word@127.0.0.1:9200 (fields)", "from http://***@127.0.0.1:9200 (fields)"),
    ("https://admin:p@ss@search.example.com/idx", "https://***@search.example.com/idx"),   # raw @ in password
    ("https://admin:p%40ss@h:9200", "https://***@h:9200"),
    ("hosts=['http://u:secret-1@h:9200', 'http://h2:9200']", "hosts=['http://***@h:9200', 'http://h2:9200']"),
    ("connect admin:pa55word@localhost:9200 failed", "connect ***@localhost:9200 failed"),   # no scheme
    ('{"url": "http://h:9200", "contact": "ops@example.com"}', '{"url": "http://h:9200", "contact": "ops@example.com"}'),
    ("meeting at 12:30 with bob@example.com", "meeting at 12:30 with bob@example.com"),
    ("GET http://127.0.0.1:9200/docs/_search [status:200]", "GET http://127.0.0.1:9200/docs/_search [status:200]"),
])
def test_urls(text, expected):
    assert redact(text) == expected


def test_secret_env_values_in_any_form(secret_env):
    for value in secret_env.values():
        assert redact(f"before {value} after") == f"before {MASK} after"
    assert redact("percent-encoded: os-Pw%219876") == f"percent-encoded: {MASK}"
    header = base64.b64encode(b"reader:os-Pw!9876").decode()
    assert redact(f"echo {header} back") == f"echo {MASK} back"          # base64 of user:password, bare


def test_authorization_headers():
    basic = base64.b64encode(b"someone:anything-at-all").decode()
    assert redact(f"Authorization: Basic {basic}") == "Authorization: ***"
    assert redact(f"{{'authorization': 'Basic {basic}'}}") == "{'authorization': '***'}"
    assert redact(f"proxy said: Basic {basic} refused") == f"proxy said: Basic {MASK} refused"
    assert redact("Bearer sk-live-12345abcdef") == f"Bearer {MASK}"
    # prose that only looks like a header stays as it is
    for prose in ("use basic auth (username/password) or SigV4", "Basic authentication failed",
                  "Bearer tokens are not used", "Token indices sequence length is longer"):
        assert redact(prose) == prose


def test_query_parameters_and_sigv4():
    url = "https://b.s3.amazonaws.com/k?X-Amz-Security-Token=FQoG%2Fz&X-Amz-Signature=ab12&part=1"
    assert redact(url) == "https://b.s3.amazonaws.com/k?X-Amz-Security-Token=***&X-Amz-Signature=***&part=1"
    assert redact("GET /?password=hunter2&user=x") == "GET /?password=***&user=x"
    assert redact("Credential=AKID/x, Signature=0123456789abcdef0123") == "Credential=AKID/x, Signature=***"
    assert redact("max_token=5") == "max_token=5"


def test_short_values_are_not_searched(monkeypatch):
    monkeypatch.setenv("OPENSEARCH_PASSWORD", "abc")     # every "abc" in a log would vanish
    assert redact("abcdef") == "abcdef"
    assert redact("http://u:abc@h:9200") == "http://***@h:9200"   # the URL rule still applies


def test_remembered_and_explicit_secrets():
    remember_secret("remembered-Secret-77", username="svc")
    assert redact("value remembered-Secret-77") == f"value {MASK}"
    assert redact(base64.b64encode(b"svc:remembered-Secret-77").decode()) == MASK
    assert redact("once-only-secret here", secrets=["once-only-secret"]) == f"{MASK} here"
    assert redact("once-only-secret here") == "once-only-secret here"


def test_metadata_structures_keep_their_shape():
    value = {"source_files": ["http://a:b-secret@h:9200/idx"], "n": 3, "nested": ({"http://x:y@h": None},)}
    assert redact(value) == {"source_files": ["http://***@h:9200/idx"], "n": 3, "nested": ({"http://***@h": None},)}


def test_redacted_errors_rewrites_the_chain_and_keeps_clean_errors(secret_env):
    with pytest.raises(RedactedError) as info:
        with redacted_errors():
            try:
                raise ConnectionError(f"proxy echoed Authorization: Basic {base64.b64encode(b'u:v-long').decode()}")
            except ConnectionError as inner:
                raise ValueError("cannot read http://reader:os-Pw!9876@h:9200/docs") from inner
    text = str(info.value)
    assert text == ("ValueError: cannot read http://***@h:9200/docs; caused by ConnectionError: proxy echoed "
                    "Authorization: ***")
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert info.value.__traceback__ is not None
    with pytest.raises(KeyError):                       # nothing to hide: the original error, unchanged
        with redacted_errors():
            raise KeyError("plain")
