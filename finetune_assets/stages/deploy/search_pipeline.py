"""search_pipeline: the search a user should run, BM25 fused with the registered model as a hybrid query.

Writes the search pipeline body (`PUT /_search/pipeline/<name>`), the ingest pipeline that writes the model's
field (a sparse model's documents pruned as evaluation_report measured them), a ready query, and how to apply
them; with a cluster and a registered model it creates the search pipeline (idempotent) and runs one hybrid query
through both pipelines on a scratch index. Which search is delivered follows the held-out figures of
evaluation_report: the hybrid query, the model alone, or plain BM25 when neither model search beats it. When the
quality gate stopped the tuned model, the same choice is made among the base model's searches (model_package
packaged the base model for it), or plain BM25 when none of them beats BM25.
"""

from typing import Literal

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from finetune_assets.core.jsonl import read_json, read_jsonl, write_json
from finetune_assets.core.retrieval.fusion import (
    RRF,
    WITHOUT_RRF,
    Z_SCORE,
    FusionSetting,
    hybrid_query,
    lexical_query,
)
from finetune_assets.partitions import index_partitions
from finetune_assets.resources.base_model import BaseModelResource
from finetune_assets.resources.opensearch import OpenSearchResource
from finetune_assets.resources.storage import ArtifactStorage
from finetune_assets.stages.evaluation.evaluation_report import REPORT_FILE
from finetune_assets.stages.run_config import check_run_config

PIPELINE_FILE = "search_pipeline.json"
INGEST_FILE = "ingest_pipeline.json"
QUERY_FILE = "query.json"
HOW_TO_FILE = "apply.md"
# On equal held-out figures the hybrid query is preferred, then the model alone, then BM25.
PREFERENCE = ("hybrid", "model", "bm25")


class SearchPipelineConfig(Config):
    search: Literal["auto", "hybrid", "model", "bm25"] = Field(default="auto", description="The search to deliver: "
                                                               "auto = the best on the held-out queries; after a "
                                                               "failed quality gate, the base model's, or bm25 when "
                                                               "no model was registered.")
    name: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$", description="Search pipeline name ('' = "
                      "finetune-assets-<index>).")
    text_field: str = Field(default="text", min_length=1, description="The index field the BM25 sub-query matches.")
    vector_field: str = Field(default="", description="The index field the model writes ('' = embedding for dense "
                              "models, sparse for sparse ones).")


def report_row(mode: str, system: str) -> str:
    """The evaluation report's row that scores a search mode: hybrid_<system>, the system alone, or bm25."""
    return {"hybrid": f"hybrid_{system}", "model": system, "bm25": "bm25"}[mode]


def best_search(report: dict, system: str) -> tuple[str, dict[str, float]]:
    """The search mode with `system`'s best held-out nDCG@10 in the evaluation report, and each mode's figure."""
    results = report["results"]
    figures = {"hybrid": results.get(report_row("hybrid", system), {}).get("ndcg@10", float("-inf")),
               **{name: results[report_row(name, system)]["ndcg@10"] for name in ("model", "bm25")}}
    return max(PREFERENCE, key=lambda name: (figures[name], -PREFERENCE.index(name))), figures


def choose_search(report: dict, registration: dict, wanted: str = "auto") -> tuple[str, str, str]:
    """(mode, system, reason): mode is hybrid, model or bm25; system is the registered model's report row (base
    when the gate failed and the base model was registered in its place; empty when nothing was)."""
    fallback = registration.get("fallback")
    system = registration.get("system") or ("" if fallback else "tuned")
    if not system:
        return "bm25", "", f"fallback: {registration.get('note', 'no model was registered')}"
    said = "fallback: the tuned model failed the quality gate, so the base model stands in; " if fallback else ""
    if wanted != "auto":
        return wanted, system, f"{said}set by the search setting ({wanted})"
    mode, figures = best_search(report, system)
    shown = ", ".join(f"{name} {value:.4f}" for name, value in figures.items())
    return mode, system, f"{said}best held-out nDCG@10 ({shown} on {report['judged_queries']} queries)"


def how_to(name: str, mode: str, index: str, vector_field: str = "embedding", model_type: str = "dense",
           prune_ratio: float = 0.0, setting: FusionSetting | None = None) -> str:
    if mode == "bm25":
        return (f"# Search for '{index}'\n\nRun the BM25 query in {QUERY_FILE} against the index "
                "(`GET /<index>/_search`); no search pipeline is needed.\n")
    mapping = "`knn_vector` of the model's dimension" if model_type == "dense" else "`rank_features`"
    lines = [f"# Search for '{index}'", "",
             f"1. Index through the model: `PUT /_ingest/pipeline/{name}-ingest` with the body in {INGEST_FILE}, "
             f"map the field `{vector_field}` as {mapping}, set the index's `index.default_pipeline` to it and "
             "reindex the documents."]
    if prune_ratio:
        lines += [f"   Each document keeps the tokens weighing at least {prune_ratio} of its largest weight "
                  "(max_ratio pruning, OpenSearch 2.19+), as evaluation_report measured the model; on an older "
                  "cluster remove prune_type and prune_ratio."]
    if mode == "hybrid":
        lines += [f"2. Create the search pipeline: `PUT /_search/pipeline/{name}` with the body in {PIPELINE_FILE}."]
        if setting is not None and setting.weighted_rrf:
            lines += ["   Its reciprocal rank fusion weighs the sub-queries (OpenSearch 3.1+); an older cluster accepts "
                      "the body but ignores the weights, so there remove `parameters` for plain RRF (2.19+)."]
        elif setting is not None and setting.technique == Z_SCORE:
            lines += ["   Its z_score normalisation needs OpenSearch 3.0+; an older cluster refuses the body, so there "
                      "write min_max in its place."]
        lines += [f"3. Search: `GET /<index>/_search?search_pipeline={name}` with the body in {QUERY_FILE}, "
                  "replacing {{query_text}} by the user's query (in both sub-queries)."]
    else:
        lines += [f"2. Search: `GET /<index>/_search` with the body in {QUERY_FILE}, replacing {{{{query_text}}}}."]
    return "\n".join(lines) + "\n"


@asset(partitions_def=index_partitions, group_name="deploy", deps=["evaluation_report", "registered_model_id"],
       kinds={"opensearch"})
def search_pipeline(context: AssetExecutionContext, config: SearchPipelineConfig, storage: ArtifactStorage,
                    opensearch: OpenSearchResource, base_model: BaseModelResource) -> MaterializeResult:
    """The search pipeline body and query to use: hybrid (BM25 + model), the model alone, or BM25, whichever
    scored best on the held-out queries; created in the cluster when one is configured."""
    check_run_config(context)
    index = context.partition_key
    report = read_json(storage.fetch(index, "evaluation_report") / REPORT_FILE)
    registration = read_json(storage.fetch(index, "registered_model_id") / "registration.json")
    mode, system, reason = choose_search(report, registration, config.search)
    name = config.name or f"finetune-assets-{index}"
    model_type = base_model.model_type
    vector_field = config.vector_field or ("embedding" if model_type == "dense" else "sparse")
    model_id = registration.get("query_model_id") or registration.get("model_id") or "<model id>"
    setting, body = None, None
    prune_ratio = report.get("document_prune_ratio", base_model.prune_ratio)  # as evaluation_report measured it
    if mode == "hybrid":
        setting = FusionSetting.from_dict(report["hybrid"][f"hybrid_{system}"]["setting"])
        body = pipeline_body(setting, index)
        query = hybrid_query(model_type, model_id, text_field=config.text_field, vector_field=vector_field)
    elif mode == "model":
        query = {"size": 10, "query": hybrid_query(model_type, model_id, text_field=config.text_field,
                                                   vector_field=vector_field)["query"]["hybrid"]["queries"][1]}
    else:
        query = lexical_query(text_field=config.text_field)
    if reason.startswith("fallback"):
        what = "plain BM25 search" if mode == "bm25" else f"{mode} search with the {system} model"
        context.log.warning(f"search_pipeline {reason}: delivering {what}")
    else:
        context.log.info(f"search_pipeline delivers {mode} search: {reason}")
    folder = storage.artifact_dir(index, "search_pipeline", run_id=context.run.run_id)
    if body is not None:
        write_json(folder / PIPELINE_FILE, body)
    write_json(folder / QUERY_FILE, query)
    created, top_hits = "not applied (no cluster configured)", {}
    if body is not None and opensearch.configured and registration.get("model_id"):
        created, top_hits, setting, prune_ratio = _apply(context, opensearch, name, setting, registration,
                                                         model_type, storage, index, prune_ratio)
        body = pipeline_body(setting, index)
        write_json(folder / PIPELINE_FILE, body)  # the body the cluster holds, RRF's replacement included
    elif body is not None and registration.get("model_id") is None:
        created = "not applied (no model registered in a cluster)"
    ingest = None
    if mode != "bm25":
        # documents go through the document model (an inference-free model's queries use query_model_id)
        ingest = ingest_body(model_type, registration.get("model_id") or "<model id>", index,
                             text_field=config.text_field, vector_field=vector_field, prune_ratio=prune_ratio)
        write_json(folder / INGEST_FILE, ingest)
    guide = how_to(name, mode, index, vector_field, model_type, prune_ratio if ingest else 0.0,
                   setting=setting)
    (folder / HOW_TO_FILE).write_text(guide, encoding="utf-8")
    write_json(folder / "search.json", {"mode": mode, "system": system, "reason": reason, "name": name,
                                        "setting": setting.to_dict() if setting else None, "cluster": created,
                                        "document_prune_ratio": prune_ratio if ingest else None,
                                        "verification_top_hits": top_hits})
    uri = storage.publish(index, "search_pipeline", folder)
    return MaterializeResult(metadata={
        "path": MetadataValue.path(uri),
        "mode": mode,
        "fallback": reason.startswith("fallback"),
        "reason": reason,
        "pipeline_name": name if body is not None else "none",
        "fusion": setting.name if setting else "none",
        "cluster": created,
        "query": MetadataValue.json(query),
        **({"pipeline_body": MetadataValue.json(body)} if body is not None else {}),
        **({"ingest_pipeline_body": MetadataValue.json(ingest)} if ingest is not None else {}),
        **({"verification_top_hits": MetadataValue.json(top_hits)} if top_hits else {}),
    })


def setting_for_version(setting: FusionSetting, version: tuple[int, ...] | None) -> tuple[FusionSetting, str]:
    """The setting where the cluster runs it as written (`FusionSetting.since`), else the nearest one it runs, and a
    warning that says so (empty when kept): weighted RRF becomes RRF at equal weights before 3.1, which would
    otherwise ignore the weights silently (so an unreported version counts as older); z_score becomes min_max with
    the same weights before 3.0, and RRF becomes WITHOUT_RRF before 2.19, where either would be refused."""
    if version is not None and version >= setting.since:
        return setting, ""
    if setting.weighted_rrf:
        replacement, needs = FusionSetting(RRF), "its score-ranker-processor applies weights from 3.1 on"
    elif version is None:
        return setting, ""  # a refusal is loud: put_search_pipeline's UnknownProcessorError still catches RRF
    elif setting.technique == Z_SCORE:
        replacement = FusionSetting("min_max", setting.combination, setting.model_weight)
        needs = "its normalization-processor offers z_score from 3.0 on"
    else:
        replacement, needs = WITHOUT_RRF, "the score-ranker-processor (reciprocal rank fusion) arrived in 2.19"
    shown = ".".join(map(str, version)) if version else "a version it does not report"
    warning = (f"the cluster runs OpenSearch {shown}: {needs}, so the pipeline uses {replacement.name} instead of "
               f"{setting.name}")
    if version is not None and replacement.since > version:  # weighted RRF before 2.19: no RRF at all
        replacement, further = setting_for_version(replacement, version)
        warning = f"{warning}; {further}"
    return replacement, warning


def pipeline_body(setting: FusionSetting, index: str) -> dict:
    return setting.pipeline_body(f"finetune-assets hybrid search for '{index}': {setting.name}")


def ingest_body(model_type: str, model_id: str, index: str, **processor) -> dict:
    """The ingest pipeline that writes the model's field for `index` (ingest_pipelines.ingest_pipeline_body)."""
    from finetune_assets.clients.ml_commons.api import DENSE, SPARSE
    from finetune_assets.clients.ml_commons.ingest_pipelines import ingest_pipeline_body

    return ingest_pipeline_body(DENSE if model_type == "dense" else SPARSE, model_id,
                                f"finetune-assets: {model_type} model fields for '{index}'", **processor)


def _apply(context, opensearch: OpenSearchResource, name: str, setting: FusionSetting, registration: dict,
           model_type: str, storage: ArtifactStorage, index: str,
           prune_ratio: float) -> tuple[str, dict, FusionSetting, float]:
    """Create the pipeline, then prove it: one hybrid query through a scratch copy on a scratch index, its documents
    indexed through the delivered ingest processor. An older cluster gets the nearest setting it runs
    (`setting_for_version`) and, before 2.19, no document pruning, each said in the log. Returns the status, the
    check's top hits, the setting the cluster holds and the prune ratio it takes."""
    from finetune_assets.clients.ml_commons.api import DENSE, SPARSE
    from finetune_assets.clients.ml_commons.errors import PruningUnsupportedError, UnknownProcessorError
    from finetune_assets.clients.ml_commons.search_pipelines import cluster_version, put_search_pipeline
    from finetune_assets.clients.ml_commons.verify import verify_hybrid_search

    client = opensearch.client()
    if setting.since > (0, 0):
        setting, warning = setting_for_version(setting, cluster_version(client))
        if warning:
            context.log.warning(warning)
    try:
        status = put_search_pipeline(client, name, pipeline_body(setting, index))
    except UnknownProcessorError as exc:
        if setting.technique != RRF:
            raise
        context.log.warning(f"{exc}: reciprocal rank fusion needs OpenSearch 2.19 or later; the pipeline uses "
                            f"{WITHOUT_RRF.name} instead")
        setting = WITHOUT_RRF
        status = put_search_pipeline(client, name, pipeline_body(setting, index))
    body = pipeline_body(setting, index)
    context.log.info(f"search pipeline {name}: {status} in {opensearch.display_url}")
    held_out = next(read_jsonl(storage.fetch(index, "training_pairs") / "held_out.jsonl"))
    distractors = [d["text"] for d in read_jsonl(storage.fetch(index, "raw_corpus") / "documents.jsonl")
                   if d["id"] != held_out["doc_id"]][:4]

    def check(ratio: float) -> dict:
        return verify_hybrid_search(client, registration["model_id"], DENSE if model_type == "dense" else SPARSE,
                                    [held_out["positive"], *distractors], held_out["query"], body,
                                    query_model_id=registration.get("query_model_id"), document_prune_ratio=ratio)

    try:
        tops = check(prune_ratio)
    except PruningUnsupportedError as exc:
        context.log.warning(f"{exc}: the ingest pipeline keeps every token, so searches cost more than "
                            "evaluation_report measured (FLOPS unpruned in its sparsity figures)")
        prune_ratio = 0.0
        tops = check(prune_ratio)
    if tops["hybrid"] != "doc-0":
        context.log.warning(f"the hybrid check query ranked {tops['hybrid']} first, not its source doc-0: the "
                            "pipeline works, but check the model on your own queries")
    return status, tops, setting, prune_ratio
