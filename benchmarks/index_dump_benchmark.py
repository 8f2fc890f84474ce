"""Benchmark dump_index against osmem: throughput (unsliced, 2 and 4 slices, opensearch-py helpers.scan)
and peak Python memory with reservoir sampling on, for 10,000 vs N documents.

    .venv/bin/python benchmarks/index_dump_benchmark.py --docs 100000 --out benchmarks/out/index_dump.json

osmem (an in-memory OpenSearch-compatible server, one Go process) runs on the same machine as the client,
so the figures measure client + server CPU together. osmem answers each point-in-time page sorted on
_shard_doc in time proportional to the whole index (about 0.7 s per page at 100,000 documents), so a PIT
dump costs O(n^2 / page_size) there while scroll stays O(n); the main table therefore uses
--page-size 10000 (the largest page max_result_window allows) and a second table compares page 1000 on a
10,000-document subset. A real OpenSearch cluster does not have this per-page cost.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

from opensearchpy import helpers
from osmem_server import OsmemServer

from finetune_assets.clients.opensearch_dump.connection import opensearch_client
from finetune_assets.clients.opensearch_dump.dump import dump_index

INDEX = "bench-corpus"
VOCAB = ("index shard replica segment merge refresh query score vector embedding token analyzer filter "
         "document field mapping cluster node search retrieval ranking model training sample batch "
         "encoder sparse dense lexical semantic relevance precision recall metric latency throughput").split()


def make_doc(i: int, rng: random.Random) -> dict:
    words = rng.choices(VOCAB, k=rng.randint(10, 40))
    return {"_index": INDEX, "_id": f"d{i:07d}", "n": i, "title": " ".join(words[:6]).capitalize(),
            "body": " ".join(words) + "."}


def index_corpus(client, docs: int) -> float:
    started = time.perf_counter()
    client.indices.create(index=INDEX, body={"settings": {"number_of_shards": 3, "number_of_replicas": 0}})
    rng = random.Random(0)
    helpers.bulk(client, (make_doc(i, rng) for i in range(docs)), chunk_size=5000, refresh=True,
                 request_timeout=300)
    count = client.count(index=INDEX)["count"]
    assert count == docs, (count, docs)
    return time.perf_counter() - started


def run_dump(client, slices: int, page_size: int, query: dict | None = None) -> tuple[float, int]:
    started = time.perf_counter()
    result = dump_index(client, INDEX, text_fields=["body"], title_field="title", slices=slices,
                        page_size=page_size, query=query)
    seconds = time.perf_counter() - started
    assert result.slices == slices and result.method == "pit", (result.slices, result.warnings)
    return seconds, result.kept


def run_scan(client, page_size: int, query: dict | None = None) -> tuple[float, int]:
    """helpers.scan (scroll, sort _doc) fetching the same fields, building the same dicts."""
    started = time.perf_counter()
    documents = []
    body: dict = {"_source": ["body", "title"]}
    if query:
        body["query"] = query
    for hit in helpers.scan(client, index=INDEX, query=body, size=page_size, scroll="5m"):
        source = hit["_source"]
        documents.append({"id": hit["_id"], "text": source["body"], "title": source.get("title")})
    return time.perf_counter() - started, len(documents)


def compare(methods: dict, docs: int, repeats: int, label: str) -> dict:
    """Each method `repeats` times, interleaved (order reversed every other round); medians and ratios."""
    timings: dict[str, list[float]] = {name: [] for name in methods}
    for repeat in range(repeats):
        order = list(methods) if repeat % 2 == 0 else list(reversed(methods))
        for name in order:
            seconds, kept = methods[name]()
            assert kept == docs, (name, kept, docs)
            timings[name].append(seconds)
            print(f"  [{label}] run {repeat + 1} {name}: {docs / seconds:,.0f} docs/s", flush=True)
    scan_median = statistics.median(timings["helpers.scan"])
    table = {}
    for name, runs in timings.items():
        median = statistics.median(runs)
        table[name] = {"seconds": [round(s, 3) for s in runs], "median_seconds": round(median, 3),
                       "median_docs_per_s": round(docs / median), "speed_vs_scan": round(scan_median / median, 2)}
    return table


def peak_memory(client, docs: int, max_documents: int | None, page_size: int) -> dict:
    gc.collect()
    tracemalloc.start()
    started = time.perf_counter()
    result = dump_index(client, INDEX, text_fields=["body"], title_field="title", max_documents=max_documents,
                        page_size=page_size, query={"range": {"n": {"lt": docs}}})
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert result.seen == docs and result.kept == min(docs, max_documents or docs)
    return {"documents_read": docs, "max_documents": max_documents, "kept": result.kept, "page_size": page_size,
            "peak_mib": round(peak / 2**20, 2), "seconds_traced": round(seconds, 2)}


def print_table(title: str, table: dict) -> None:
    print(f"\n{title}\n{'method':<22}{'median s':>10}{'docs/s':>10}{'vs scan':>9}")
    for name, row in table.items():
        print(f"{name:<22}{row['median_seconds']:>10.2f}{row['median_docs_per_s']:>10,}{row['speed_vs_scan']:>8.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sample", type=int, default=1000, help="max_documents for the memory runs")
    parser.add_argument("--page-size", type=int, default=10_000, help="page size of the main comparison")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    small = min(10_000, args.docs)

    server = OsmemServer.start(addr="127.0.0.1:0", japanese=False)
    started = time.perf_counter()
    try:
        client = opensearch_client(server.url, timeout=300, pool_maxsize=16)
        index_seconds = index_corpus(client, args.docs)
        print(f"indexed {args.docs} documents in {index_seconds:.1f} s (osmem {server.version})", flush=True)
        page = args.page_size
        run_dump(client, 1, page)                              # warm-up (connections, server caches)
        main_table = compare({"dump_index slices=1": lambda: run_dump(client, 1, page),
                              "dump_index slices=2": lambda: run_dump(client, 2, page),
                              "dump_index slices=4": lambda: run_dump(client, 4, page),
                              "helpers.scan": lambda: run_scan(client, page)}, args.docs, args.repeats,
                             f"{args.docs} docs, page {page}")
        subset = {"range": {"n": {"lt": small}}}
        small_table = compare({"dump_index slices=1": lambda: run_dump(client, 1, 1000, subset),
                               "dump_index slices=2": lambda: run_dump(client, 2, 1000, subset),
                               "dump_index slices=4": lambda: run_dump(client, 4, 1000, subset),
                               "helpers.scan": lambda: run_scan(client, 1000, subset)}, small, args.repeats,
                              f"{small} docs, page 1000")
        memory = [peak_memory(client, small, args.sample, page), peak_memory(client, args.docs, args.sample, page),
                  peak_memory(client, small, None, page), peak_memory(client, args.docs, None, page),
                  peak_memory(client, small, args.sample, 1000)]
        open_pits = server.request("GET", "/_search/point_in_time/_all").get("pits", [])
    finally:
        server.close()

    report = {
        "documents": args.docs, "repeats": args.repeats, "index_seconds": round(index_seconds, 1),
        "osmem_version": server.version, "python": platform.python_version(), "cpus": os.cpu_count(),
        f"throughput_{args.docs}_docs_page_{page}": main_table, f"throughput_{small}_docs_page_1000": small_table,
        "peak_memory": memory, "pits_left_open": len(open_pits),
        "total_seconds": round(time.perf_counter() - started, 1),
        "note": ("osmem and the client share this machine's CPUs; osmem's PIT pages cost O(index size) each; "
                 "peak memory is tracemalloc's (Python heap) during dump_index."),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")

    print_table(f"{args.docs:,} documents, page size {page}", main_table)
    print_table(f"{small:,} documents (range filter), page size 1000", small_table)
    print(f"\n{'peak memory':<22}{'page':>7}{'read':>10}{'kept':>10}{'MiB':>9}")
    for row in memory:
        label = f"sample {row['max_documents']}" if row["max_documents"] else "no sampling"
        print(f"{label:<22}{row['page_size']:>7}{row['documents_read']:>10,}{row['kept']:>10,}{row['peak_mib']:>9.1f}")
    print(f"\n{len(open_pits)} point(s) in time left open; figures written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
