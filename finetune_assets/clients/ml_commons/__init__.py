"""Register a model in OpenSearch ml-commons and deploy it, and check it with a neural-search round trip.

Two paths: an exported package folder becomes a local model (:mod:`.upload`), a SageMaker endpoint becomes a
remote model behind a connector (:mod:`.connectors`, :mod:`.remote`). Both check the cluster settings first
(:mod:`.settings`), use one model group per index (:mod:`.model_groups`), deploy and clean up after a failed
attempt (:mod:`.deploy`); :mod:`.verify` proves the model works for search. Every HTTP call goes through
:class:`.api.Api` (retries, readable errors); :mod:`.errors` holds what they raise.

Every call the package makes (``ML`` = ``/_plugins/_ml``)
    Settings check (:func:`.settings.check_cluster_settings`, first step of both registration paths)
        GET    /_cluster/settings?include_defaults=true&flat_settings=true
        GET    /_nodes?filter_path=nodes.*.name,nodes.*.roles     only when the answer depends on node roles
        POST   ML/model_groups/_search  {"size": 0}                 only when no plugins.ml_commons.* setting
                                                                    is visible (is ml-commons installed?)
    Model group (:func:`.model_groups.ensure_model_group`, one group per index)
        POST   ML/model_groups/_search      by name (term on name.keyword, exact name re-checked here)
        POST   ML/model_groups/_register    only when none exists; "name ... already being used by a model
                                            group with ID: X" -> group X is used (a concurrent run made it)
    Local package (:func:`.upload.register_local_package`)
        POST   ML/models/_search            same model_content_hash_value in the group? (chunk docs excluded)
        POST   ML/models/_register_meta     body = ml_commons_register.json + model_group_id -> model_id
        POST   ML/models/<model_id>/upload_chunk/<n>   raw zip bytes, n = 0 .. total_chunks-1
        POST   ML/models/<model_id>/_deploy -> task_id
        GET    ML/tasks/<task_id>           polled until COMPLETED (FAILED / CANCELLED / timeout -> error)
      on failure, for a model this attempt created:
        POST   ML/models/<model_id>/_undeploy   (only once a deploy was started)
        DELETE ML/models/<model_id>
    Remote SageMaker model (:func:`.remote.register_sagemaker_model`)
        POST   ML/connectors/_search        by name; reused when its predict URL is the same endpoint
        POST   ML/connectors/_create        only when none exists
        (model group as above)
        POST   ML/models/_search            a model of this connector already in the group?
        POST   ML/models/_register          {"function_name": "remote", "connector_id": ...} -> model_id
        GET    ML/tasks/<task_id>           only when the register answer has no model_id (older clusters)
        POST   ML/models/<model_id>/_deploy, GET ML/tasks/<task_id>, cleanup as for the local path
    Inference-free sparse package (:func:`.upload.register_inference_free_package`): the local-package calls
        twice, document/ (SPARSE_ENCODING) then query/ (SPARSE_TOKENIZE), same model group
    Verification (:func:`.verify.verify_neural_search`)
        GET    ML/models/<model_id>         dense dimension from model_config, when not given
        POST   ML/models/<model_id>/_predict  {"text_docs": [...]}: dense dimension of a remote model
        PUT    /_ingest/pipeline/<id>       text_embedding or sparse_encoding processor (:mod:`.ingest_pipelines`;
                                            sparse: max_ratio document pruning when asked, 2.19+)
        PUT    /<test index>                knn_vector (index.knn) or rank_features mapping, default_pipeline
        POST   /_bulk?refresh=true          the sample texts
        POST   /<test index>/_search        one neural / neural_sparse query -> top hit id (neural_sparse with
                                            the SPARSE_TOKENIZE model for inference-free search)
        DELETE /<test index>, DELETE /_ingest/pipeline/<id>   always, also on errors
    Reachability (:func:`.api.check_reachable`, called by ``finetune-assets register`` before anything else)
        GET    /                            one request; only a failed connection is an error

Secrets: connector credentials are never logged (see :mod:`.connectors`); ``finetune-assets register`` reads
the password from ``OPENSEARCH_PASSWORD`` only. The package imports opensearch-py and the package-format
constants of :mod:`finetune_assets.core.export.package`; never Dagster.
"""
