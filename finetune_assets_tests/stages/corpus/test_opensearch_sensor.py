"""opensearch_index_sensor against osmem over HTTP: new indices become partitions and runs, once each."""
from dagster import DagsterInstance, build_sensor_context
from dagster._config import validate_config

from finetune_assets.definitions import defs
from finetune_assets.resources.opensearch import OpenSearchResource
from finetune_assets.stages.corpus.sensors import opensearch_index_sensor, plan_index_runs
from finetune_assets_tests.fakes.osmem_server import osmem as osmem  # pytest fixture

PATTERN = "*watched-docs*"


def _evaluate(instance, cursor, url):
    context = build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                   resources={"opensearch": OpenSearchResource(url=url)})
    result = opensearch_index_sensor(context)
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def test_sensor_requests_one_run_per_new_index(osmem, monkeypatch):
    from opensearchpy import OpenSearch

    monkeypatch.setenv("FINETUNE_OPENSEARCH_INDEX_PATTERN", PATTERN)
    client = OpenSearch(osmem.url)
    for index in ["watched-docs-a", "watched-docs-b", "unwatched-notes", ".watched-docs-system"]:
        client.indices.create(index=index)
    try:
        with DagsterInstance.ephemeral() as instance:
            first = _evaluate(instance, None, osmem.url)
            assert sorted(r.partition_key for r in first.run_requests) == ["watched-docs-a", "watched-docs-b"]
            assert sorted(instance.get_dynamic_partitions("index")) == ["watched-docs-a", "watched-docs-b"]
            request = first.run_requests[0]
            assert request.run_config == {"ops": {"raw_corpus": {"config": {"from_opensearch": True}}}}
            job = defs.resolve_job_def("finetune")
            assert validate_config(job.run_config_schema.config_type, request.run_config).success

            # A restart re-reads the stored cursor: the same indices request nothing.
            second = _evaluate(instance, first.cursor, osmem.url)
            assert second.run_requests == [] and second.dynamic_partitions_requests == []

            client.indices.create(index="watched-docs-c")
            third = _evaluate(instance, second.cursor, osmem.url)
            assert [r.partition_key for r in third.run_requests] == ["watched-docs-c"]

            # Deleted and created again: a new index under an old name runs again, with a new run key.
            client.indices.delete(index="watched-docs-a")
            client.indices.create(index="watched-docs-a")
            fourth = _evaluate(instance, third.cursor, osmem.url)
            assert [r.partition_key for r in fourth.run_requests] == ["watched-docs-a"]
            assert fourth.run_requests[0].run_key != next(
                r.run_key for r in first.run_requests if r.partition_key == "watched-docs-a")
            assert fourth.dynamic_partitions_requests == []   # the partition is already there
            assert sorted(instance.get_dynamic_partitions("index")) == [
                "watched-docs-a", "watched-docs-b", "watched-docs-c"]
    finally:
        client.indices.delete(index=PATTERN, params={"expand_wildcards": "all"}, ignore=[404])
        client.indices.delete(index="unwatched-notes", ignore=[404])


def test_sensor_skips_without_a_cluster_or_a_pattern(monkeypatch):
    monkeypatch.setenv("FINETUNE_OPENSEARCH_INDEX_PATTERN", PATTERN)
    with DagsterInstance.ephemeral() as instance:
        context = build_sensor_context(instance=instance, resources={"opensearch": OpenSearchResource(url="")})
        assert "OPENSEARCH_URL" in opensearch_index_sensor(context).skip_message
        monkeypatch.delenv("FINETUNE_OPENSEARCH_INDEX_PATTERN")
        context = build_sensor_context(instance=instance,
                                       resources={"opensearch": OpenSearchResource(url="http://127.0.0.1:1")})
        assert "FINETUNE_OPENSEARCH_INDEX_PATTERN" in opensearch_index_sensor(context).skip_message


def test_closed_and_invalid_indices_are_skipped_with_a_reason():
    listing = {"docs": {"uuid": "u1", "created": "1", "status": "open"},
               "old-docs": {"uuid": "u2", "created": "2", "status": "close"},
               "Docs_Upper": {"uuid": "u3", "created": "3", "status": "open"},
               "no-uuid": {"uuid": "", "created": "1700000000000", "status": "open"}}
    runs, skipped, cursor = plan_index_runs(listing, seen={})
    assert runs == {"docs": "docs:u1", "no-uuid": "no-uuid:1700000000000"}
    assert skipped["old-docs"] == "it is closed" and "upper-case" in skipped["Docs_Upper"]
    assert cursor == {"docs": "u1", "no-uuid": "1700000000000"}
