from dagster import DynamicPartitionsDefinition

# One partition per OpenSearch index (or corpus): the partition key is the index name.
index_partitions = DynamicPartitionsDefinition(name="index")
