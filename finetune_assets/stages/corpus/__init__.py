"""corpus: the partition's documents (raw_corpus), what the AWS path would cost (cost_estimate), and the sensors
that start a run when a corpus or an index appears."""
from finetune_assets.stages.corpus.cost_estimate import cost_estimate
from finetune_assets.stages.corpus.raw_corpus import few_records_quarantined, raw_corpus
from finetune_assets.stages.corpus.sensors import opensearch_index_sensor, s3_corpus_sensor

assets = [raw_corpus, cost_estimate]
asset_checks = [few_records_quarantined]
sensors = [s3_corpus_sensor, opensearch_index_sensor]
