"""dump_index against a real osmem server over HTTP: completeness, slicing, sampling, errors, faults.

A proxy in front of osmem injects 503/429 answers, dropped connections, lost responses, a missing PIT,
a cluster without PIT (and without scroll), one that ignores `slice`, and auth failures.
"""
from __future__ import annotations

import base64
import json

import pytest
from opensearchpy import OpenSearch

from finetune_assets import cli
from finetune_assets.clients.opensearch_dump.connection import OpenSearchConnection, opensearch_client
from finetune_assets.clients.opensearch_dump.dump import dump_index
from finetune_assets.clients.opensearch_dump.errors import (
    AuthenticationError,
    EmptyIndexError,
    IndexDumpError,
    IndexNotFoundError,
    TextFieldError,
    UnsupportedClusterError,
)
from finetune_assets.clients.opensearch_dump.session import RetryPolicy
from finetune_assets_tests.fakes import osmem_server as osmem_helpers
from finetune_assets_tests.fakes.osmem_server import FaultProxy, bulk_index, open_pits

osmem = osmem_helpers.osmem                  # fixtures: session osmem, per-test fault proxy in front of it
fault_proxy = osmem_helpers.fault_proxy

INDEX = "dump-corpus"
N_DOCS = 10_500
WORDS = ["retrieval", "tokenizer", "shard", "segment", "embedding", "replica", "analyzer", "scoring"]
FAST = RetryPolicy(max_retries=4, initial_backoff=0.01, max_backoff=0.05)
NO_PIT = {"error": {"root_cause": [{"type": "illegal_argument_exception",
                                    "reason": "no handler found for uri [/dump-corpus/_search/point_in_time]"}],
                    "type": "illegal_argument_exception",
                    "reason": "no handler found for uri [/dump-corpus/_search/point_in_time]"}, "status": 400}


def make_doc(i: int) -> dict:
    doc = {"_id": f"doc-{i:05d}", "title": f"Title {i}", "group": "a" if i % 4 == 0 else "b",
           "body": f"Document {i} is about {WORDS[i % 8]} and {WORDS[(i * 7) % 8]}.",
           "content": {"body": f"Nested body {i}", "lang": "en"}}
    if i % 1000 == 7:
        del doc["body"]              # missing field
    elif i % 1000 == 13:
        doc["body"] = "   "          # blank text
    elif i % 1000 == 21:
        doc["body"] = 42             # not text
    return doc


EXPECTED_TEXT = {}
EXPECTED_SKIPPED = {}
for _i in range(N_DOCS):
    _doc = make_doc(_i)
    _body = _doc.get("body")
    if isinstance(_body, str) and _body.strip():
        EXPECTED_TEXT[_doc["_id"]] = _body
    else:
        EXPECTED_SKIPPED[_doc["_id"]] = ("missing field 'body'" if _body is None else
                                         "field 'body' is empty" if isinstance(_body, str) else
                                         "field 'body' is not text (int)")


@pytest.fixture(scope="module")
def corpus(osmem) -> str:
    client = OpenSearch(hosts=[osmem.url], timeout=60)
    bulk_index(client, INDEX, (make_doc(i) for i in range(N_DOCS)), shards=3)
    assert client.count(index=INDEX)["count"] == N_DOCS
    return INDEX


@pytest.fixture(scope="module")
def client(osmem) -> OpenSearch:
    return opensearch_client(osmem.url, timeout=60)


def proxied(proxy: FaultProxy, **kwargs) -> OpenSearch:
    """A client through the proxy whose transport does not retry: only dump_index's retries count."""
    return opensearch_client(proxy.url, max_retries=0, timeout=30, **kwargs)


def as_map(result) -> dict[str, str]:
    ids = [d["id"] for d in result.documents]
    assert len(ids) == len(set(ids)), "a document was returned twice"
    return {d["id"]: d["text"] for d in result.documents}


def assert_complete(result, osmem) -> None:
    assert as_map(result) == EXPECTED_TEXT
    assert {s["id"]: s["reason"] for s in result.skipped} == EXPECTED_SKIPPED
    assert result.seen == N_DOCS and result.kept == len(EXPECTED_TEXT)
    assert open_pits(osmem) == [], "the point in time was left open"


# --------------------------------------------------------------------------------------- completeness


def test_full_dump_equals_the_index(corpus, client, osmem):
    result = dump_index(client, corpus, text_fields=["body"], title_field="title", page_size=1000)
    assert_complete(result, osmem)
    assert result.method == "pit" and result.slices == 1 and not result.sampled
    assert result.pages == 11 and result.expected == N_DOCS and result.warnings == []
    titles = {d["id"]: d["title"] for d in result.documents}
    assert titles["doc-00042"] == "Title 42"
    assert len(EXPECTED_SKIPPED) == 33


def test_sliced_dump_equals_unsliced(corpus, client, osmem):
    calls = []
    sliced = dump_index(client, corpus, text_fields=["body"], slices=3, page_size=700,
                        progress=lambda done, total: calls.append((done, total)))
    assert sliced.slices == 3, sliced.warnings     # osmem slices PIT searches (checked by per-slice totals)
    assert_complete(sliced, osmem)
    assert calls[-1] == (N_DOCS, N_DOCS)


def test_filter_query(corpus, client):
    result = dump_index(client, corpus, text_fields=["body"], query={"term": {"group.keyword": "a"}})
    expected = {k: v for k, v in EXPECTED_TEXT.items() if int(k[4:]) % 4 == 0}
    assert as_map(result) == expected
    assert result.seen == N_DOCS // 4


# ------------------------------------------------------------------------------------------- sampling


def test_reservoir_sample_is_reproducible_and_sized(corpus, client, osmem):
    first = dump_index(client, corpus, text_fields=["body"], max_documents=300, seed=7)
    again = dump_index(client, corpus, text_fields=["body"], max_documents=300, seed=7)
    other = dump_index(client, corpus, text_fields=["body"], max_documents=300, seed=8)
    ids = [d["id"] for d in first.documents]
    assert ids == [d["id"] for d in again.documents]
    assert ids != [d["id"] for d in other.documents]
    assert len(ids) == len(set(ids)) == 300 and first.sampled and first.kept == 300
    assert first.seen == N_DOCS and first.eligible == len(EXPECTED_TEXT)
    assert all(EXPECTED_TEXT[d["id"]] == d["text"] for d in first.documents)
    mean_position = sum(int(i[4:]) for i in ids) / len(ids)
    assert 3500 < mean_position < 7000, "the sample is not spread over the index"

    sliced = dump_index(client, corpus, text_fields=["body"], max_documents=300, seed=7, slices=3)
    sliced_again = dump_index(client, corpus, text_fields=["body"], max_documents=300, seed=7, slices=3)
    sliced_ids = [d["id"] for d in sliced.documents]
    assert sliced.slices == 3 and sliced_ids == [d["id"] for d in sliced_again.documents]
    assert len(set(sliced_ids)) == 300 and set(sliced_ids) <= set(EXPECTED_TEXT)
    assert open_pits(osmem) == []


def test_sample_larger_than_index_keeps_everything(corpus, client):
    result = dump_index(client, corpus, text_fields=["body"], max_documents=50_000, seed=1)
    assert not result.sampled and as_map(result) == EXPECTED_TEXT


# ------------------------------------------------------------------------------ fields and nested paths


def test_several_fields_and_dotted_paths(corpus, client):
    result = dump_index(client, corpus, text_fields=["title", "content.body"], max_documents=None)
    assert not result.skipped
    texts = as_map(result)
    assert len(texts) == N_DOCS
    assert texts["doc-00007"] == "Title 7\nNested body 7"


def test_nested_type_field(osmem, client):
    mappings = {"properties": {"comments": {"type": "nested", "properties": {"text": {"type": "text"}}},
                               "title": {"type": "text"}}}
    docs = [{"_id": f"n{i}", "title": f"T{i}", "comments": [{"text": f"first {i}"}, {"text": f"second {i}"}]}
            for i in range(40)] + [{"_id": "n-none", "title": "no comments"}]
    bulk_index(client, "dump-nested", docs, mappings=mappings)
    result = dump_index(client, "dump-nested", text_fields=["comments.text"], title_field="title")
    texts = as_map(result)
    assert texts["n3"] == "first 3\nsecond 3" and len(texts) == 40
    assert result.skipped == [{"id": "n-none", "reason": "missing field 'comments.text'"}]


# --------------------------------------------------------------------------------------- clear errors


def test_missing_index_is_named(osmem, client):
    with pytest.raises(IndexNotFoundError, match="index 'no-such-index' does not exist"):
        dump_index(client, "no-such-index", text_fields=["body"])


def test_empty_index(osmem, client):
    client.indices.create(index="dump-empty")
    with pytest.raises(EmptyIndexError, match="index 'dump-empty' is empty"):
        dump_index(client, "dump-empty", text_fields=["body"])


def test_query_matching_nothing(corpus, client):
    with pytest.raises(EmptyIndexError, match="no document of index 'dump-corpus' matches the query"):
        dump_index(client, corpus, text_fields=["body"], query={"term": {"group.keyword": "zzz"}})


def test_wrong_text_field_lists_the_fields_seen(corpus, client, osmem):
    with pytest.raises(TextFieldError) as info:
        dump_index(client, corpus, text_fields=["bdy"])
    message = str(info.value)
    assert "no document has field 'bdy'" in message and "fields seen:" in message
    assert "body (text)" in message and "content.body (text)" in message
    assert open_pits(osmem) == []


def test_mapped_field_without_values(osmem, client):
    mappings = {"properties": {"summary": {"type": "text"}, "body": {"type": "text"}}}
    bulk_index(client, "dump-nosummary", [{"_id": str(i), "body": f"b{i}"} for i in range(20)], mappings=mappings)
    with pytest.raises(TextFieldError, match=r"no document has field 'summary'.*20 documents read.*fields seen: "
                                             r"body \(text\), summary \(text\)"):
        dump_index(client, "dump-nosummary", text_fields=["summary"])
    assert open_pits(osmem) == []


# ------------------------------------------------------------------------------------- fault injection


PAGE = "search_after"   # only follow-up page requests carry search_after


def test_503_and_429_are_retried(corpus, fault_proxy, osmem):
    fault_proxy.add("status", status=503, method="POST", body_contains=PAGE, after=2)
    fault_proxy.add("status", status=429, method="POST", body_contains=PAGE, after=5, times=2)
    result = dump_index(proxied(fault_proxy), corpus, text_fields=["body"], slices=2, retry=FAST)
    assert_complete(result, osmem)
    assert result.retries == 3
    assert [r.fault for r in fault_proxy.requests].count("status") == 3


def test_dropped_connection_resumes_from_last_sort_values(corpus, fault_proxy, osmem):
    fault_proxy.add("drop", method="POST", body_contains=PAGE, after=3)
    fault_proxy.add("drop_response", method="POST", body_contains=PAGE, after=6)   # server did it, answer lost
    result = dump_index(proxied(fault_proxy), corpus, text_fields=["body"], retry=FAST)
    assert_complete(result, osmem)
    assert result.retries == 2 and result.pages == 11


def test_missing_pit_is_reopened_and_closed(corpus, fault_proxy, osmem):
    fault_proxy.add("pit_missing", method="POST", body_contains=PAGE, after=4)
    result = dump_index(proxied(fault_proxy), corpus, text_fields=["body"], slices=3, retry=FAST)
    assert_complete(result, osmem)                       # no PIT left open on osmem
    assert result.pit_reopens == 1
    created = fault_proxy.calls("POST", "/_search/point_in_time")
    deleted = fault_proxy.calls("DELETE", "/_search/point_in_time")
    assert len(created) == 2
    closed = {pit for call in deleted for pit in json.loads(call.body)["pit_id"]}
    assert len(closed) == 2                              # the replaced PIT and the final one


def test_pit_that_really_expires_is_reopened(corpus, client, osmem):
    import time

    slept = []

    def slow_consumer(done, total):
        if not slept:
            slept.append(done)
            time.sleep(2.2)                              # longer than the 1 s keep-alive

    result = dump_index(client, corpus, text_fields=["body"], page_size=2000, pit_keep_alive="1s",
                        progress=slow_consumer, retry=FAST)
    assert_complete(result, osmem)
    assert result.pit_reopens == 1


def test_persistent_failure_gives_up_and_closes_the_pit(corpus, fault_proxy, osmem):
    fault_proxy.add("status", status=502, method="POST", body_contains=PAGE, after=1, times=100)
    with pytest.raises(IndexDumpError, match="failed 3 times, giving up: HTTP 502"):
        dump_index(proxied(fault_proxy), corpus, text_fields=["body"], slices=2,
                   retry=RetryPolicy(max_retries=2, initial_backoff=0.01))
    assert fault_proxy.calls("DELETE", "/_search/point_in_time")
    assert open_pits(osmem) == []


def test_cluster_that_ignores_slice_is_read_unsliced(corpus, fault_proxy, osmem):
    def strip_slice(method, path, body):
        if b'"slice"' not in body:
            return body
        data = json.loads(body)
        data.pop("slice", None)
        return json.dumps(data).encode()

    fault_proxy.rewrite = strip_slice
    result = dump_index(proxied(fault_proxy), corpus, text_fields=["body"], slices=3, retry=FAST)
    assert result.slices == 1 and "does not slice" in result.warnings[0]
    assert_complete(result, osmem)


def test_scroll_fallback_without_pit(corpus, fault_proxy, osmem):
    fault_proxy.add("status", status=400, body=NO_PIT, method="POST", path_contains="point_in_time", times=100)
    fault_proxy.add("drop_response", method="POST", path_contains="/_search/scroll", after=3)
    result = dump_index(proxied(fault_proxy), corpus, text_fields=["body"], slices=2, retry=FAST)
    assert result.method == "scroll" and result.slices == 2
    assert result.scroll_restarts == 1                  # restarted, skipped what it had, checked the last id
    assert_complete(result, osmem)
    assert "point in time unavailable" in result.warnings[0]
    opened = len(fault_proxy.calls("POST", "scroll=")) - 3   # minus the 3 probes (1 + 2 slices), cleared at once
    assert len(fault_proxy.calls("DELETE", "/_search/scroll")) >= opened


def test_neither_pit_nor_scroll(corpus, fault_proxy):
    fault_proxy.add("status", status=400, body=NO_PIT, method="POST", path_contains="point_in_time", times=100)
    fault_proxy.add("status", status=400, path_contains="scroll=", times=100,
                    body={"error": {"type": "illegal_argument_exception", "reason": "scroll is not supported"},
                          "status": 400})
    with pytest.raises(UnsupportedClusterError, match="supports neither point-in-time search nor scroll"):
        dump_index(proxied(fault_proxy), corpus, text_fields=["body"], retry=FAST)


# ------------------------------------------------------------------------------------ authentication


def test_basic_auth_header_and_401_message(corpus, fault_proxy):
    client = proxied(fault_proxy, username="reader", password="s3cret-pw")
    dump_index(client, corpus, text_fields=["body"], max_documents=5)
    expected = "Basic " + base64.b64encode(b"reader:s3cret-pw").decode()
    assert all(r.headers.get("authorization") == expected for r in fault_proxy.requests)

    fault_proxy.add("status", status=401, times=100,
                    body={"error": {"type": "security_exception", "reason": "Unauthorized"}, "status": 401})
    with pytest.raises(AuthenticationError) as info:
        dump_index(client, corpus, text_fields=["body"])
    assert "check the username/password" in str(info.value) and "IAM" in str(info.value)
    assert "s3cret-pw" not in str(info.value)


def test_aws_sigv4_signing(corpus, fault_proxy):
    from botocore.credentials import Credentials

    client = proxied(fault_proxy, aws_region="eu-west-1", aws_service="aoss",
                     aws_credentials=Credentials("AKIDEXAMPLE", "secret-key"))
    result = dump_index(client, corpus, text_fields=["body"], max_documents=5)
    assert result.kept == 5
    for request in fault_proxy.requests:
        auth = request.headers.get("authorization", "")
        assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"), auth
        assert "/eu-west-1/aoss/aws4_request" in auth and "x-amz-date" in request.headers


def test_make_client_defaults_and_checks():
    connection = opensearch_client("https://search.example.invalid:9200").transport.get_connection()
    assert connection.pool.cert_reqs == "CERT_REQUIRED"          # TLS verification on by default
    with pytest.raises(ValueError, match="not both"):
        opensearch_client("https://h:9200", username="u", password="p", aws_region="us-east-1")
    with pytest.raises(ValueError, match="'es'.*'aoss'"):
        opensearch_client("https://h:9200", aws_region="us-east-1", aws_service="s3")


def test_connection_repr_and_url_errors_hide_credentials():
    connection = OpenSearchConnection(url="http://admin:pw-in-url@h:9200", username="admin", password="pw-field")
    assert repr(connection) == "OpenSearchConnection(http://***@h:9200 (auth: basic, certificate verification on))"
    with pytest.raises(ValueError) as info:
        opensearch_client("admin:pw-in-url@localhost:9200")          # no scheme: refused, and the message is redacted
    assert str(info.value) == "OpenSearch URL must look like https://host:9200, got '***@localhost:9200'"


# -------------------------------------------------------------------------------------------------- CLI


def test_extract_cli(corpus, osmem, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENSEARCH_PASSWORD", raising=False)
    out = tmp_path / "dump.jsonl"
    code = cli.main(["extract", "--opensearch-url", osmem.url, "--index", corpus, "--text-field", "body",
                     "--title-field", "title", "--out", str(out), "--max-docs", "50", "--slices", "2"])
    assert code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 50 and set(lines[0]) == {"_id", "title", "text"}
    assert all(EXPECTED_TEXT[rec["_id"]] == rec["text"] for rec in lines)
    skipped = (tmp_path / "dump.skipped.jsonl").read_text().splitlines()
    assert len(skipped) == len(EXPECTED_SKIPPED)

    code = cli.main(["extract", "--opensearch-url", osmem.url, "--index", "nope", "--text-field", "body",
                     "--out", str(tmp_path / "x.jsonl")])
    assert code == 1 and "index 'nope' does not exist" in capsys.readouterr().err
    assert cli.main(["extract", "--opensearch-url", osmem.url, "--index", corpus, "--text-field", "body",
                     "--out", str(tmp_path / "y.jsonl"), "--username", "u"]) == 2


def test_extract_refuses_an_out_folder_before_reading_anything(fault_proxy, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    for out, message in [
        (tmp_path, f"error: --out {tmp_path} is a folder; give the file to write, e.g. {tmp_path / 'corpus.jsonl'}"),
        (tmp_path / "a-file" / "dump.jsonl", f"error: --out {tmp_path / 'a-file' / 'dump.jsonl'} cannot be created: "
                                             f"{tmp_path / 'a-file'} is a file, not a folder"),
    ]:
        code = cli.main(["extract", "--opensearch-url", fault_proxy.url, "--index", INDEX, "--text-field", "body",
                         "--out", str(out)])
        captured = capsys.readouterr()
        assert (code, captured.err.strip(), captured.out) == (2, message, "")
    assert fault_proxy.requests == []                   # refused before the dump started


def test_extract_usage_errors_name_the_extract_command(tmp_path, capsys):
    with pytest.raises(SystemExit) as help_exit:
        cli.main(["extract", "--help"])
    out = capsys.readouterr().out
    assert help_exit.value.code == 0 and out.startswith("usage: finetune-assets extract [-h] --opensearch-url")
    assert "The password is read from the OPENSEARCH_PASSWORD environment variable" in " ".join(out.split())
    with pytest.raises(SystemExit) as usage_exit:
        cli.main(["extract", "--opensearch-url", "http://127.0.0.1:9", "--index", INDEX, "--text-field", "body",
                  "--out", str(tmp_path / "dump.jsonl"), "--bogus"])
    err = capsys.readouterr().err
    assert usage_exit.value.code == 2
    assert err.startswith("usage: finetune-assets extract [-h]")
    assert err.endswith("finetune-assets extract: error: unrecognized arguments: --bogus\n")
    assert not (tmp_path / "dump.jsonl").exists()
