"""Dump an OpenSearch index into training documents ``{"id", "text", "title"}``.

:func:`.dump.dump_index` runs a dump; each step lives in its own module.

How it reads
    A point in time (PIT) plus ``search_after`` sorted on ``_shard_doc`` (:mod:`.pit`): a frozen view of the
    index, read page by page, each request idempotent, so a failed request is simply sent again with the same
    sort values. With ``slices > 1`` the PIT search is split with ``slice: {id, max}`` and each slice is read by
    its own thread (:mod:`.slicing`). Whether the server really slices is checked first (per-slice hit totals
    must add up to the whole); a server that ignores ``slice`` gets one unsliced stream instead of duplicated
    documents. Clusters without PIT (OpenSearch < 2.4, Elasticsearch-compatible services, users not allowed to
    create PITs) are read with scroll (:mod:`.scroll`, sliced the same way); a scroll interrupted by an error
    restarts and skips what was already read, checking the last document id it had, so nothing is lost or read
    twice. Before any page, :mod:`.preflight` checks that the index exists, has matching documents and maps the
    text fields; :mod:`.fields` turns each hit into a document or a reason it was skipped.

Fault tolerance
    429 and 5xx answers and broken connections are retried with bounded exponential backoff
    (:class:`.session.RetryPolicy`, errors read by :mod:`.failures`); a PIT that expired or disappeared ("No
    search context found") is reopened and the dump goes on from the last sort values; the PIT (or scroll) is
    always closed, also on errors. Resuming after a reopened PIT is exact when the index did not change
    meanwhile (``_shard_doc`` values are Lucene doc ids); if it changed, the result (:mod:`.result`) carries a
    warning and the counts say what was read. :mod:`.errors` holds what the dump raises.

Memory
    With ``max_documents`` each slice keeps a reservoir (Algorithm R, ``random.Random(seed)``) of at most
    ``max_documents`` documents and the reservoirs are merged by a seeded multivariate-hypergeometric draw
    (:mod:`.sampling`), so memory stays flat however large the index is and the sample is a uniform one,
    reproducible for a given seed, slice count and (unchanged) index.

Connections (:mod:`.connection`) use HTTP basic auth (password from ``OPENSEARCH_PASSWORD`` for the CLI) or
AWS SigV4; :mod:`.output` writes the corpus JSONL that ``finetune-assets extract`` produces. The package imports
opensearch-py and (for AWS SigV4 only) boto3; it never imports Dagster.
"""
