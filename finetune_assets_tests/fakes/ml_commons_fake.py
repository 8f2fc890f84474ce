"""A contract-test server for OpenSearch ml-commons: real HTTP on 127.0.0.1, in-memory state, documented answers.

No ml-commons can run on these machines (see the shared notes), so the registration client is tested against
this server. It answers with the response bodies the OpenSearch documentation gives (and the error texts
ml-commons' source throws), keeps enough state for whole flows (groups, models, chunks, tasks, connectors,
pipelines, indices), records every request (method, path, query parameters, raw body) so tests can assert the
exact sequence of calls, and can be scripted to misbehave.

Sources of the bodies (documentation-website, ``_ml-commons-plugin/...``; ml-commons for error texts):
    model group register/search   api/model-group-apis/register-model-group.md, search-model-group.md
                                  "The name you provided is already being used by a model group with ID: X."
                                  (MLModelGroupManager)
    models/_register_meta, upload_chunk   RestMLRegisterModelMetaAction / RestMLUploadModelChunkAction (routes,
                                  the allow_registering_model_via_local_file error text); answers
                                  {"model_id", "status": "CREATED"} and {"status": "Uploaded"}
    models/_register (remote)     api/model-apis/register-model.md {"task_id", "status", "model_id"}
    _deploy, tasks                api/model-apis/deploy-model.md, api/tasks-apis/get-task.md
    model GET/_search/DELETE      api/model-apis/get-model.md, search-model.md, delete-model.md
    _undeploy                     api/model-apis/undeploy-model.md
    connectors                    api/connector-apis/create-connector.md, search-connector.md
    cluster settings              cluster-settings.md, MLCommonsSettings (defaults, trusted endpoint regexes)
    "No eligible node found ..."  MLTaskDispatcher; "no handler found for uri [...]" OpenSearch RestController
    "model config is null"        MLRegisterModelMetaInput (model_config optional for SPARSE_ENCODING/_TOKENIZE)
    SPARSE_TOKENIZE models        SparseTokenizerModel: deploy loads tokenizer.json (+ optional idf.json) from the
                                  zip root; a neural_sparse query weights each distinct token by idf (default 1.0)
    search pipelines, hybrid      search-plugins/search-pipelines/normalization-processor.md (techniques, weights
                                  in [0, 1] summing to 1, one per sub-query), score-ranker-processor.md (rrf,
                                  rank_constant; weights from 3.1, neural-search #1322: each 1 / (k + rank)
                                  times its sub-query's weight, validated as the normalization-processor's;
                                  before 3.1 RRFScoreCombinationTechnique took no parameters, so weights were
                                  accepted and ignored), query-dsl/compound/hybrid.md (at most 5 sub-queries); the
                                  fusion arithmetic of neural-search's ScoreNormalizer / ScoreCombiner: a
                                  sub-query's statistics over its own hits, min_max floor 0.001, absent scores
                                  left out of the mean. ``match`` scores by shared lower-case words.
    ingest pruning (2.19+)        ingest-pipelines/processors/sparse-encoding.md (documentation-website #8984):
                                  prune_type max_ratio / abs_value / alpha_mass / top_k / none and each one's valid
                                  prune_ratio; before 2.19 the ingest service refuses unknown processor keys with
                                  "processor [X] doesn't support one or more provided configuration parameters"

Scripting (attributes and methods of :class:`FakeMLCommons`):
    ``settings={...}``            persistent cluster settings (flat names), on top of ml-commons' defaults
    ``node_roles={...}``          node name -> roles (default: one data node, no ML node)
    ``ml_commons=False``          no plugin: every /_plugins/_ml path answers ``no_ml_commons_status``
    ``fail_deploy = "text"``      deploy tasks end FAILED with that error ({"<node>": "text"}, as ml-commons)
    ``deploy_polls = n``          GET tasks answers RUNNING n-1 times before the final state
    ``group_search_misses = n``   the next n model-group searches find nothing (a concurrent registration)
    ``missing_system_indices``    searches answer index_not_found_exception while nothing exists
    ``score_ranker=False``, ``pruning=False``   a cluster before 2.19: no score-ranker-processor, no pruning
    ``version="3.0.0"``           what ``GET /`` reports; before 3.1 RRF weights are accepted and ignored,
                                  before 3.0 the z_score normalisation is refused
    ``fail_next(method, regex, status, times=1, drop=False, process=False)``   inject 429/5xx answers or
                                  dropped connections; ``process=True`` handles the request first and then
                                  loses the answer (a 502 from a proxy after the cluster did the work)
"""
from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import random
import re
import socket
import statistics
import threading
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

ML = "/_plugins/_ml"
S = "plugins.ml_commons."

# ml-commons' defaults for the settings the client reads (cluster-settings.md, MLCommonsSettings).
ML_DEFAULTS: dict[str, Any] = {
    S + "only_run_on_ml_node": "true",
    S + "allow_registering_model_via_url": "false",
    S + "allow_registering_model_via_local_file": "false",
    S + "trusted_url_regex": "^(https?|ftp|file)://[-a-zA-Z0-9+&@#/%?=~_|!:,.;]*[-a-zA-Z0-9+&@#/%=~_|]",
    S + "trusted_connector_endpoints_regex": [
        r"^https://runtime\.sagemaker\..*[a-z0-9-]\.amazonaws\.com/.*$",
        r"^https://api\.sagemaker\..*[a-z0-9-]\.amazonaws\.com/.*$",
        r"^https://api\.openai\.com/.*$",
        r"^https://api\.cohere\.ai/.*$",
        r"^https://bedrock-runtime\..*[a-z0-9-]\.amazonaws\.com/.*$",
    ],
    S + "connector_access_control_enabled": "false",
    S + "model_access_control_enabled": "false",
    S + "remote_inference.enabled": "true",
    S + "local_model.enabled": "true",
    S + "native_memory_threshold": "90",
    S + "jvm_heap_memory_threshold": "85",
    S + "max_ml_task_per_node": "10",
    S + "max_model_on_node": "10",
    S + "max_deploy_model_tasks_per_node": "10",
    S + "max_register_model_tasks_per_node": "10",
    S + "task_dispatcher.eligible_node_role.remote_model": ["data", "ml"],
    S + "task_dispatcher.eligible_node_role.local_model": ["data", "ml"],
}
DEV_SETTINGS = {S + "allow_registering_model_via_local_file": "true", S + "only_run_on_ml_node": "false"}

LOCAL_FILE_DISABLED = ("To upload custom model from local file, user needs to enable "
                       "allow_registering_model_via_local_file settings. Otherwise please use opensearch pre-trained "
                       "models.")
URL_DISABLED = ("To upload custom model user needs to enable allow_registering_model_via_url settings. Otherwise "
                "please use opensearch pre-trained models.")
NO_ELIGIBLE_NODE = ("No eligible node found to execute this request. It's best practice to provision ML nodes to "
                    "serve your models. You can disable this setting to serve the model on your data node for "
                    "development purposes by disabling the \"plugins.ml_commons.only_run_on_ml_node\" configuration "
                    "using the _cluster/setting api")
ACCESS_DISABLED = ("You cannot specify model access control parameters because the Security plugin or model access "
                   "control is disabled on your cluster.")
REMOTE_DISABLED = ("Remote Inference is currently disabled. To enable it, update the setting "
                   "\"plugins.ml_commons.remote_inference_enabled\" to true.")
UNTRUSTED_URL = "Connector URL is not matching the trusted connector endpoint regex"
DELETE_DEPLOYED = "Model cannot be deleted in deploying or deployed state. Try undeploy model first then delete"

DROP = object()   # dispatch result: close the connection without answering
SPARSE_FUNCTIONS = ("SPARSE_ENCODING", "SPARSE_TOKENIZE")   # may be registered without model_config


def error_body(status: int, kind: str, reason: str) -> tuple[int, dict]:
    """OpenSearch's error envelope."""
    cause = {"type": kind, "reason": reason}
    return status, {"error": {"root_cause": [cause], **cause}, "status": status}


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    body: bytes
    headers: dict[str, str]

    @property
    def call(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def json(self) -> Any:
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@dataclass
class Fault:
    method: str
    pattern: re.Pattern
    status: int
    body: dict | None
    times: int
    drop: bool
    process: bool = False


def _get(doc: dict, name: str) -> Any:
    if name == "_id":
        return doc.get("_id")
    if name.endswith(".keyword"):
        name = name[: -len(".keyword")]
    value: Any = doc
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _listify(value: Any) -> list:
    return value if isinstance(value, list) else [value]


# Fields a term query can hit exactly in the system indices (keyword in ml-commons' index mappings
# ml_model.json / ml_model_group.json / ml_connector.json; `name` is text with a `name.keyword` subfield).
# A term query on any other field (text, or like `connector_id` not mapped at all) finds nothing here.
KEYWORD_FIELDS = {
    ".plugins-ml-model": {"_id", "algorithm", "model_version", "model_group_id", "model_id", "model_format",
                          "model_state", "model_content_hash_value", "name.keyword", "chunk_number", "total_chunks"},
    ".plugins-ml-model-group": {"_id", "name.keyword", "access", "model_group_id", "latest_version"},
    ".plugins-ml-connector": {"_id", "name.keyword", "protocol", "version", "access"},
}


def matches(doc: dict, query: dict | None, keyword_fields: set[str] | None = None) -> bool:
    """The query subset the client uses: match_all, term(s), match, exists, bool."""
    if not query:
        return True
    (kind, spec), = query.items()
    if kind == "match_all":
        return True
    if kind in ("term", "terms") and keyword_fields is not None:
        (name, _), = spec.items()
        if name not in keyword_fields:
            return False
    if kind in ("term", "match", "match_phrase"):
        (name, value), = spec.items()
        if isinstance(value, dict):
            value = value.get("value", value.get("query"))
        actual = _get(doc, name)
        return value in actual if isinstance(actual, list) else actual == value
    if kind == "terms":
        (name, values), = spec.items()
        return _get(doc, name) in values
    if kind == "exists":
        return _get(doc, spec["field"]) is not None
    if kind == "bool":
        required = _listify(spec.get("must", [])) + _listify(spec.get("filter", []))
        should = _listify(spec.get("should", []))
        if not all(matches(doc, q, keyword_fields) for q in required):
            return False
        if any(matches(doc, q, keyword_fields) for q in _listify(spec.get("must_not", []))):
            return False
        return not should or bool(required) or any(matches(doc, q, keyword_fields) for q in should)
    raise ValueError(f"fake ml-commons does not understand the query {kind!r}")


def fake_embedding(text: str, dimension: int) -> list[float]:
    """A deterministic bag-of-words vector (stable CRC32 buckets), so shared words mean higher cosine."""
    vector = [0.0] * dimension
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        vector[zlib.crc32(word.encode()) % dimension] += 1.0
    return vector


def fake_sparse(text: str) -> dict[str, float]:
    weights: dict[str, float] = {}
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        weights[word] = weights.get(word, 0.0) + 1.0
    return weights


# sparse-encoding.md (2.19+): the valid prune_ratio of each prune_type; "none" takes no ratio.
PRUNE_RATIO_RANGES = {"max_ratio": lambda r: 0 <= r < 1, "alpha_mass": lambda r: 0 <= r < 1,
                      "abs_value": lambda r: r > 0, "top_k": lambda r: r > 0 and float(r).is_integer(),
                      "none": lambda r: True}


def prune(weights: dict[str, float], prune_type: str | None, ratio) -> dict[str, float]:
    """The sparse_encoding processor's pruning of one vector, as sparse-encoding.md describes each prune_type:
    max_ratio keeps weights >= ratio x the largest, abs_value weights >= ratio, top_k the ratio largest, alpha_mass
    the largest while their running sum stays within ratio x the total."""
    if prune_type in (None, "none") or not weights:
        return weights
    ranked = sorted(weights.items(), key=lambda item: -item[1])
    if prune_type == "max_ratio":
        kept = [item for item in ranked if item[1] >= ranked[0][1] * float(ratio)]
    elif prune_type == "abs_value":
        kept = [item for item in ranked if item[1] >= float(ratio)]
    elif prune_type == "top_k":
        kept = ranked[:int(ratio)]
    else:  # alpha_mass
        budget, total, kept = float(ratio) * sum(weights.values()), 0.0, []
        for item in ranked:
            total += item[1]
            if total > budget:
                break
            kept.append(item)
    return dict(kept)


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    norm = (sum(x * x for x in a) * sum(y * y for y in b)) ** 0.5
    return dot / norm if norm else 0.0


class FakeMLCommons:
    """See the module docstring. Use as a context manager (or ``start()``/``stop()``); ``url`` is the base URL."""

    def __init__(self, *, settings: dict | None = None, node_roles: dict[str, list[str]] | None = None,
                 ml_commons: bool = True, no_ml_commons_status: int = 404, deploy_polls: int = 1,
                 missing_system_indices: bool = False, remote_dimension: int = 32, score_ranker: bool = True,
                 pruning: bool = True, version: str = "3.1.0"):
        self.persistent: dict[str, Any] = dict(settings or {})
        self.transient: dict[str, Any] = {}
        self.node_roles = node_roles or {"node-1": ["cluster_manager", "data", "ingest", "remote_cluster_client"]}
        self.ml_commons = ml_commons
        self.no_ml_commons_status = no_ml_commons_status
        self.deploy_polls = deploy_polls
        self.missing_system_indices = missing_system_indices
        self.remote_dimension = remote_dimension
        self.score_ranker = score_ranker  # False: a cluster before 2.19, without the score-ranker-processor
        self.pruning = pruning  # False: a cluster before 2.19, whose sparse_encoding processor cannot prune
        self.version = version  # GET /'s version.number; RRF weights apply from 3.1, z_score from 3.0
        self.fail_deploy: str | None = None
        self.group_search_misses = 0
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self.groups: dict[str, dict] = {}
        self.models: dict[str, dict] = {}
        self.chunks: dict[str, dict[int, bytes]] = {}
        self.tasks: dict[str, dict] = {}
        self.connectors: dict[str, dict] = {}
        self.pipelines: dict[str, dict] = {}
        self.search_pipelines: dict[str, dict] = {}
        self.indices: dict[str, dict] = {}
        self._rng = random.Random(7)
        self._clock = itertools.count(1_700_000_000_000, 1000)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle and scripting

    def start(self) -> "FakeMLCommons":
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                                        name="fake-ml-commons", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeMLCommons":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server, "start the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def fail_next(self, method: str, path_regex: str, status: int = 429, *, body: dict | None = None,
                  times: int = 1, drop: bool = False, process: bool = False) -> None:
        """The next ``times`` matching requests get ``status`` (or a dropped connection) instead of an answer;
        with ``process=True`` the request is carried out first and only its answer is lost."""
        self.faults.append(Fault(method.upper(), re.compile(path_regex), status, body, times, drop, process))

    def calls(self, contains: str = "") -> list[str]:
        """``"METHOD /path"`` of every request so far (optionally only those containing ``contains``)."""
        return [r.call for r in self.requests if contains in r.call]

    def clear_requests(self) -> None:
        self.requests.clear()

    def setting(self, name: str) -> Any:
        for section in (self.transient, self.persistent, ML_DEFAULTS if self.ml_commons else {}):
            if name in section:
                return section[name]
        return None

    def _flag(self, name: str) -> bool:
        return str(self.setting(S + name)).lower() == "true"

    def _new_id(self) -> str:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
        return "".join(self._rng.choice(alphabet) for _ in range(20))

    # ---------------------------------------------------------------- dispatch

    def dispatch(self, method: str, path: str, params: dict, body: bytes, headers: dict) -> Any:
        with self._lock:
            self.requests.append(Request(method, path, params, body, headers))
            for fault in self.faults:
                if fault.times > 0 and fault.method == method and fault.pattern.search(path):
                    fault.times -= 1
                    if fault.process:
                        self._answer(method, path, params, body)
                    if fault.drop:
                        return DROP
                    if fault.body is not None:
                        return fault.status, fault.body
                    kind = "rejected_execution_exception" if fault.status == 429 else "unavailable"
                    return error_body(fault.status, kind, f"injected HTTP {fault.status}")
            return self._answer(method, path, params, body)

    def _answer(self, method: str, path: str, params: dict, body: bytes) -> tuple[int, Any]:
        if path.startswith(ML) and not self.ml_commons:
            return self.no_ml_commons_status, {"error": f"no handler found for uri [{path}] and method [{method}]"}
        for methods, pattern, handler in self._routes():
            found = pattern.fullmatch(path)
            if found and method in methods:
                payload: Any = body
                if body and not handler.__name__.startswith("_raw") and handler.__name__ != "_bulk":
                    try:
                        payload = json.loads(body)
                    except ValueError as exc:
                        return error_body(400, "parse_exception", f"request body is not JSON: {exc}")
                return handler(params, payload, *found.groups())
        return 400, {"error": f"no handler found for uri [{path}] and method [{method}]"}

    def _routes(self):
        m = re.compile
        return (
            (("GET",), m(r"/"), self._info),
            (("GET",), m(r"/_cluster/settings"), self._cluster_settings),
            (("GET",), m(r"/_nodes"), self._nodes),
            (("GET", "POST"), m(ML + r"/model_groups/_search"), self._group_search),
            (("POST",), m(ML + r"/model_groups/_register"), self._group_register),
            (("GET", "POST"), m(ML + r"/models/_search"), self._model_search),
            (("POST",), m(ML + r"/models/(?:_register_meta|meta)"), self._register_meta),
            (("POST",), m(ML + r"/models/([^/]+)/(?:upload_chunk|chunk)/(\d+)"), self._raw_upload_chunk),
            (("POST",), m(ML + r"/models/_register"), self._register),
            (("POST",), m(ML + r"/models/([^/]+)/_deploy"), self._deploy),
            (("POST",), m(ML + r"/models/([^/]+)/_undeploy"), self._undeploy),
            (("POST",), m(ML + r"/models/([^/]+)/_predict"), self._predict),
            (("GET",), m(ML + r"/models/([^/_][^/]*)"), self._model_get),
            (("DELETE",), m(ML + r"/models/([^/_][^/]*)"), self._model_delete),
            (("GET",), m(ML + r"/tasks/([^/]+)"), self._task_get),
            (("POST",), m(ML + r"/connectors/_create"), self._connector_create),
            (("GET", "POST"), m(ML + r"/connectors/_search"), self._connector_search),
            (("GET",), m(ML + r"/connectors/([^/_][^/]*)"), self._connector_get),
            (("PUT",), m(r"/_search/pipeline/([^/]+)"), self._search_pipeline_put),
            (("GET",), m(r"/_search/pipeline/([^/]+)"), self._search_pipeline_get),
            (("DELETE",), m(r"/_search/pipeline/([^/]+)"), self._search_pipeline_delete),
            (("PUT",), m(r"/_ingest/pipeline/([^/]+)"), self._pipeline_put),
            (("DELETE",), m(r"/_ingest/pipeline/([^/]+)"), self._pipeline_delete),
            (("POST", "PUT"), m(r"/_bulk"), self._bulk),
            (("GET", "POST"), m(r"/([^/_][^/]*)/_search"), self._index_search),
            (("PUT",), m(r"/([^/_][^/]*)"), self._index_create),
            (("DELETE",), m(r"/([^/_][^/]*)"), self._index_delete),
        )

    # ---------------------------------------------------------------- cluster

    def _cluster_settings(self, params, _body):
        defaults = {"cluster.name": "fake-cluster", "node.name": "node-1"}
        if self.ml_commons:
            defaults.update(ML_DEFAULTS)
        explicit = set(self.persistent) | set(self.transient)
        answer = {"persistent": dict(self.persistent), "transient": dict(self.transient)}
        if params.get("include_defaults") == "true":
            answer["defaults"] = {k: v for k, v in defaults.items() if k not in explicit}
        if params.get("flat_settings") != "true":
            answer = {section: _nest(values) for section, values in answer.items()}
        return 200, answer

    def _nodes(self, _params, _body):
        nodes = {f"id-{name}": {"name": name, "roles": roles} for name, roles in self.node_roles.items()}
        return 200, {"nodes": nodes}

    def _has_role(self, roles: list[str]) -> bool:
        return any(set(r) & set(roles) for r in self.node_roles.values())

    # ---------------------------------------------------------------- search helper

    def _hits(self, index: str, docs: dict[str, dict], body: dict | None, extra: list[dict] = ()) -> tuple[int, dict]:
        body = body or {}
        pool = [{"_id": k, **v} for k, v in docs.items()] + list(extra)
        found = [d for d in pool if matches(d, body.get("query"), KEYWORD_FIELDS.get(index))]
        for spec in reversed(body.get("sort") or []):
            (name, order), = spec.items()
            descending = (order.get("order") if isinstance(order, dict) else order) == "desc"
            found.sort(key=lambda d: (_get(d, name) is None, _get(d, name) or 0), reverse=descending)
        size = int(body.get("size", 10))
        hits = [{"_index": index, "_id": d["_id"], "_version": 1, "_seq_no": 0, "_primary_term": 1, "_score": 1.0,
                 "_source": {k: v for k, v in d.items() if k != "_id" and not k.startswith("_")}}
                for d in found[:size]]
        return 200, {"took": 1, "timed_out": False,
                     "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                     "hits": {"total": {"value": len(found), "relation": "eq"},
                              "max_score": 1.0 if hits else None, "hits": hits}}

    def _missing_index(self, index: str):
        return error_body(404, "index_not_found_exception", f"no such index [{index}]")

    # ---------------------------------------------------------------- model groups

    def _group_search(self, _params, body):
        if self.group_search_misses > 0:
            self.group_search_misses -= 1
            return self._hits(".plugins-ml-model-group", {}, body)
        if self.missing_system_indices and not self.groups:
            return self._missing_index(".plugins-ml-model-group")
        return self._hits(".plugins-ml-model-group", self.groups, body)

    def _group_register(self, _params, body):
        name = (body or {}).get("name")
        if not name:
            return error_body(400, "illegal_argument_exception", "model group name is required")
        if any(k in body for k in ("access_mode", "backend_roles", "add_all_backend_roles")) \
                and not self._flag("model_access_control_enabled"):
            return error_body(400, "illegal_argument_exception", ACCESS_DISABLED)
        for group_id, group in self.groups.items():
            if group["name"] == name:
                return error_body(400, "illegal_argument_exception",
                                  f"The name you provided is already being used by a model group with ID: {group_id}.")
        group_id = self._new_id()
        now = next(self._clock)
        self.groups[group_id] = {"name": name, "description": body.get("description", ""), "latest_version": 0,
                                 "access": body.get("access_mode", "public"), "created_time": now,
                                 "last_updated_time": now}
        return 200, {"model_group_id": group_id, "status": "CREATED"}

    # ---------------------------------------------------------------- models

    def _chunk_docs(self) -> list[dict]:
        docs = []
        for model_id, chunks in self.chunks.items():
            model = self.models.get(model_id, {})
            for number in chunks:
                docs.append({"_id": f"{model_id}_{number}", "model_id": model_id, "chunk_number": number,
                             "name": model.get("name"), "algorithm": model.get("algorithm"),
                             "model_group_id": model.get("model_group_id"),
                             "model_content_hash_value": model.get("model_content_hash_value"),
                             "total_chunks": model.get("total_chunks")})
        return docs

    def _model_search(self, _params, body):
        if self.missing_system_indices and not self.models:
            return self._missing_index(".plugins-ml-model")
        return self._hits(".plugins-ml-model", self.models, body, self._chunk_docs())

    def _new_model(self, body: dict, algorithm: str, state: str, **extra) -> str:
        group = self.groups[body["model_group_id"]]
        group["latest_version"] += 1
        model_id = self._new_id()
        now = next(self._clock)
        self.models[model_id] = {
            "name": body["name"], "model_group_id": body["model_group_id"], "algorithm": algorithm,
            "model_version": str(group["latest_version"]), "description": body.get("description", ""),
            "model_state": state, "created_time": now, "last_updated_time": now, **extra,
        }
        return model_id

    def _register_meta(self, _params, body):
        if not self._flag("allow_registering_model_via_local_file"):
            return error_body(400, "illegal_argument_exception", LOCAL_FILE_DISABLED)
        if not body:
            return error_body(400, "i_o_exception", "Model meta request has empty body")
        missing = [k for k in ("name", "version", "model_format", "model_content_hash_value", "total_chunks",
                               "function_name") if k not in body]
        if missing:
            return error_body(400, "illegal_argument_exception", f"{missing[0]} is required")
        if not body.get("model_config") and body["function_name"] not in SPARSE_FUNCTIONS:
            return error_body(400, "illegal_argument_exception", "model config is null")  # MLRegisterModelMetaInput
        if body.get("model_group_id") not in self.groups:
            return error_body(404, "status_exception", "Failed to find model group")
        model_id = self._new_model(
            body, body["function_name"], "REGISTERING", model_format=body["model_format"],
            model_content_hash_value=body["model_content_hash_value"],
            model_content_size_in_bytes=body.get("model_content_size_in_bytes"),
            total_chunks=int(body["total_chunks"]), model_config=body.get("model_config"))
        self.chunks[model_id] = {}
        return 200, {"model_id": model_id, "status": "CREATED"}

    def _raw_upload_chunk(self, _params, body: bytes, model_id: str, number: str):
        if not self._flag("allow_registering_model_via_local_file"):
            return error_body(400, "illegal_argument_exception", LOCAL_FILE_DISABLED)
        model = self.models.get(model_id)
        if model is None:
            return error_body(404, "status_exception", "Failed to find model")
        n = int(number)
        if n >= model["total_chunks"]:
            return error_body(400, "illegal_argument_exception", "Chunk number exceeds total chunks")
        self.chunks[model_id][n] = bytes(body)
        if len(self.chunks[model_id]) == model["total_chunks"]:
            model["model_state"] = "REGISTERED"
            model["last_registered_time"] = next(self._clock)
        return 200, {"status": "Uploaded"}

    def assembled(self, model_id: str) -> bytes:
        """The uploaded zip of a local model: its chunks joined in chunk-number order."""
        chunks = self.chunks[model_id]
        return b"".join(chunks[n] for n in sorted(chunks))

    def _zip_files(self, model_id: str) -> dict[str, bytes]:
        with zipfile.ZipFile(io.BytesIO(self.assembled(model_id))) as archive:
            return {name: archive.read(name) for name in archive.namelist()}

    def _tokenizer_problem(self, model_id: str) -> str | None:
        """SparseTokenizerModel loads tokenizer.json (required) and idf.json (optional) from the zip root."""
        try:
            files = self._zip_files(model_id)
            from tokenizers import Tokenizer

            Tokenizer.from_str(files["tokenizer.json"].decode())
            json.loads(files.get("idf.json", b"{}"))
        except Exception as exc:  # noqa: BLE001 - any load failure fails the deploy
            return f"Failed to deploy model {model_id}: {type(exc).__name__}: {exc}"
        return None

    def sparse_tokenize(self, model_id: str, text: str) -> dict[str, float]:
        """SparseTokenizerModel.predict: distinct token ids, decoded alone (special tokens skipped), idf or 1.0."""
        from tokenizers import Tokenizer

        files = self._zip_files(model_id)
        tokenizer = Tokenizer.from_str(files["tokenizer.json"].decode())
        idf = json.loads(files.get("idf.json", b"{}"))
        tokens = (tokenizer.decode([i], skip_special_tokens=True) for i in dict.fromkeys(tokenizer.encode(text).ids))
        return {token: float(idf.get(token, 1.0)) for token in tokens if token}

    def _register(self, _params, body):
        body = body or {}
        if body.get("function_name", "").lower() == "remote" or "connector_id" in body or "connector" in body:
            if not self._flag("remote_inference.enabled"):
                return error_body(400, "illegal_argument_exception", REMOTE_DISABLED)
            if body.get("connector_id") not in self.connectors:
                return error_body(404, "status_exception", "Failed to find connector")
            if body.get("model_group_id") not in self.groups:
                return error_body(404, "status_exception", "Failed to find model group")
            model_id = self._new_model(body, "REMOTE", "REGISTERED", connector_id=body["connector_id"])
            task_id = self._new_id()
            now = next(self._clock)
            self.tasks[task_id] = {"model_id": model_id, "task_type": "REGISTER_MODEL", "function_name": "REMOTE",
                                   "state": "COMPLETED", "worker_node": [f"id-{next(iter(self.node_roles))}"],
                                   "create_time": now, "last_update_time": now, "is_async": False}
            return 200, {"task_id": task_id, "status": "CREATED", "model_id": model_id}
        if "url" in body and not self._flag("allow_registering_model_via_url"):
            return error_body(400, "illegal_argument_exception", URL_DISABLED)
        return error_body(400, "illegal_argument_exception", "the fake only registers remote models here")

    def _deploy(self, _params, _body, model_id: str):
        model = self.models.get(model_id)
        if model is None:
            return error_body(404, "status_exception", "Failed to find model")
        remote = model["algorithm"] == "REMOTE"
        if remote:
            eligible = self.setting(S + "task_dispatcher.eligible_node_role.remote_model") or ["data", "ml"]
            if not self._has_role(eligible):
                return error_body(400, "illegal_argument_exception", NO_ELIGIBLE_NODE)
        else:
            if self._flag("only_run_on_ml_node") and not self._has_role(["ml"]):
                return error_body(400, "illegal_argument_exception", NO_ELIGIBLE_NODE)
            if model["model_state"] == "REGISTERING":
                return error_body(400, "illegal_argument_exception", "Model not ready yet, it is still registering")
        failure = self.fail_deploy
        if not remote and failure is None:
            digest = hashlib.sha256(self.assembled(model_id)).hexdigest()
            if digest != model["model_content_hash_value"]:
                failure = "model content changed"
            elif model["algorithm"] == "SPARSE_TOKENIZE":
                failure = self._tokenizer_problem(model_id)
        task_id = self._new_id()
        now = next(self._clock)
        self.tasks[task_id] = {"model_id": model_id, "task_type": "DEPLOY_MODEL", "function_name": model["algorithm"],
                               "state": "CREATED", "worker_node": [f"id-{n}" for n in self.node_roles],
                               "create_time": now, "last_update_time": now, "is_async": True,
                               "_polls": 0, "_failure": failure}
        model["model_state"] = "DEPLOYING"
        return 200, {"task_id": task_id, "task_type": "DEPLOY_MODEL", "status": "CREATED"}

    def _task_get(self, _params, _body, task_id: str):
        task = self.tasks.get(task_id)
        if task is None:
            return error_body(404, "status_exception", "Failed to find task")
        if task["state"] in ("CREATED", "RUNNING"):
            task["_polls"] += 1
            task["last_update_time"] = next(self._clock)
            model = self.models.get(task["model_id"], {})
            if task["_polls"] < self.deploy_polls:
                task["state"] = "RUNNING"
            elif task["_failure"]:
                task["state"] = "FAILED"
                task["error"] = json.dumps({task["worker_node"][0]: task["_failure"]})
                model["model_state"] = "DEPLOY_FAILED"
            else:
                task["state"] = "COMPLETED"
                model["model_state"] = "DEPLOYED"
                model["last_deployed_time"] = task["last_update_time"]
                model["planning_worker_nodes"] = list(task["worker_node"])
        return 200, {k: v for k, v in task.items() if not k.startswith("_")}

    def _undeploy(self, _params, _body, model_id: str):
        model = self.models.get(model_id)
        if model is None:
            return error_body(404, "status_exception", "Failed to find model")
        if model["model_state"] in ("DEPLOYED", "DEPLOYING", "PARTIALLY_DEPLOYED"):
            model["model_state"] = "UNDEPLOYED"
        return 200, {f"id-{name}": {"stats": {model_id: "UNDEPLOYED"}} for name in self.node_roles}

    def _model_get(self, _params, _body, model_id: str):
        model = self.models.get(model_id)
        if model is None:
            return error_body(404, "status_exception", "Failed to find model")
        return 200, dict(model)

    def _model_delete(self, _params, _body, model_id: str):
        model = self.models.get(model_id)
        if model is None:
            return error_body(404, "status_exception", "Failed to find model")
        if model["model_state"] in ("DEPLOYED", "DEPLOYING", "PARTIALLY_DEPLOYED"):
            return error_body(400, "status_exception", DELETE_DEPLOYED)
        del self.models[model_id]
        self.chunks.pop(model_id, None)
        group_id = model["model_group_id"]
        if not any(m["model_group_id"] == group_id for m in self.models.values()):
            self.groups.pop(group_id, None)   # delete-model.md: deleting the last version deletes the group
        return 200, {"_index": ".plugins-ml-model", "_id": model_id, "_version": 2, "result": "deleted",
                     "_shards": {"total": 2, "successful": 2, "failed": 0}, "_seq_no": 27, "_primary_term": 18}

    def _predict(self, _params, body, model_id: str):
        model = self.models.get(model_id)
        if model is None:
            return error_body(404, "status_exception", "Failed to find model")
        if model["model_state"] not in ("DEPLOYED", "PARTIALLY_DEPLOYED"):
            return error_body(400, "illegal_argument_exception", "Model not ready yet. Please deploy the model first.")
        dimension = (model.get("model_config") or {}).get("embedding_dimension") or self.remote_dimension
        texts = (body or {}).get("text_docs", [])
        outputs = [{"output": [{"name": "sentence_embedding", "data_type": "FLOAT32", "shape": [dimension],
                                "data": fake_embedding(text, dimension)}]} for text in texts]
        return 200, {"inference_results": outputs}

    # ---------------------------------------------------------------- connectors

    def _connector_create(self, _params, body):
        body = body or {}
        if not self._flag("remote_inference.enabled"):
            return error_body(400, "illegal_argument_exception", REMOTE_DISABLED)
        if any(k in body for k in ("access_mode", "backend_roles", "add_all_backend_roles")) \
                and not self._flag("connector_access_control_enabled"):
            return error_body(400, "illegal_argument_exception", ACCESS_DISABLED)
        if not body.get("credential"):
            return error_body(400, "illegal_argument_exception", "Connector credential is null or empty list")
        trusted = self.setting(S + "trusted_connector_endpoints_regex") or []
        for action in body.get("actions") or []:
            if not any(re.fullmatch(pattern, action.get("url", "")) for pattern in trusted):
                return error_body(400, "illegal_argument_exception", UNTRUSTED_URL)
        connector_id = self._new_id()
        now = next(self._clock)
        actions = [{**a, "action_type": str(a.get("action_type", "")).upper()} for a in body.get("actions") or []]
        self.connectors[connector_id] = {**body, "actions": actions, "created_time": now, "last_updated_time": now}
        return 200, {"connector_id": connector_id}

    def _public_connectors(self) -> dict[str, dict]:
        return {k: {f: v for f, v in c.items() if f != "credential"} for k, c in self.connectors.items()}

    def _connector_search(self, _params, body):
        if self.missing_system_indices and not self.connectors:
            return self._missing_index(".plugins-ml-connector")
        return self._hits(".plugins-ml-connector", self._public_connectors(), body)

    def _connector_get(self, _params, _body, connector_id: str):
        connector = self._public_connectors().get(connector_id)
        if connector is None:
            return error_body(404, "status_exception", "Failed to find connector")
        return 200, connector

    # ---------------------------------------------------------------- neural search

    def _pipeline_put(self, _params, body, pipeline_id: str):
        for processor in (body or {}).get("processors") or []:
            (kind, spec), = processor.items()
            pruning = sorted(key for key in ("prune_type", "prune_ratio") if key in spec)
            if pruning and (kind != "sparse_encoding" or not self.pruning):
                return error_body(400, "parse_exception", f"processor [{kind}] doesn't support one or more provided "
                                                          f"configuration parameters [{', '.join(pruning)}]")
            if pruning and spec.get("prune_type") not in PRUNE_RATIO_RANGES:
                return error_body(400, "illegal_argument_exception",
                                  f"Unknown prune type: {spec.get('prune_type')}")
            if pruning and not PRUNE_RATIO_RANGES[spec["prune_type"]](float(spec.get("prune_ratio", -1))):
                return error_body(400, "illegal_argument_exception",
                                  f"Illegal prune_ratio {spec.get('prune_ratio')} for prune_type: {spec['prune_type']}")
        self.pipelines[pipeline_id] = body
        return 200, {"acknowledged": True}

    def _pipeline_delete(self, _params, _body, pipeline_id: str):
        if self.pipelines.pop(pipeline_id, None) is None:
            return error_body(404, "resource_not_found_exception", f"pipeline [{pipeline_id}] is missing")
        return 200, {"acknowledged": True}

    def _index_create(self, _params, body, index: str):
        if index in self.indices:
            return error_body(400, "resource_already_exists_exception", f"index [{index}] already exists")
        settings: dict = {}
        _flatten_into("", (body or {}).get("settings") or {}, settings)
        settings = {k if k.startswith("index.") else f"index.{k}": v for k, v in settings.items()}
        properties = ((body or {}).get("mappings") or {}).get("properties") or {}
        for name, spec in properties.items():
            if spec.get("type") == "knn_vector" and str(settings.get("index.knn")).lower() != "true" \
                    and (spec.get("method") or {}).get("engine") != "lucene":
                return error_body(400, "mapper_parsing_exception", f"index.knn must be true for field [{name}]")
        self.indices[index] = {"settings": settings, "properties": properties, "docs": {}}
        return 200, {"acknowledged": True, "shards_acknowledged": True, "index": index}

    def _index_delete(self, _params, _body, index: str):
        if self.indices.pop(index, None) is None:
            return self._missing_index(index)
        return 200, {"acknowledged": True}

    def _run_pipeline(self, pipeline_id: str, doc: dict) -> dict:
        for processor in self.pipelines[pipeline_id]["processors"]:
            (kind, spec), = processor.items()
            model = self.models.get(spec["model_id"])
            if model is None or model["model_state"] not in ("DEPLOYED", "PARTIALLY_DEPLOYED"):
                raise ValueError(f"model {spec['model_id']} is not deployed")
            for source, target in spec["field_map"].items():
                if kind == "text_embedding":
                    dimension = (model.get("model_config") or {}).get("embedding_dimension") or self.remote_dimension
                    doc[target] = fake_embedding(doc[source], dimension)
                else:
                    doc[target] = prune(fake_sparse(doc[source]), spec.get("prune_type"), spec.get("prune_ratio"))
        return doc

    def _bulk(self, _params, body: bytes):
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        items, errors = [], False
        for action, doc in zip(lines[::2], lines[1::2]):
            meta = action["index"]
            index = self.indices.get(meta["_index"])
            try:
                if index is None:
                    raise ValueError(f"no such index [{meta['_index']}]")
                pipeline = index["settings"].get("index.default_pipeline")
                if pipeline:
                    doc = self._run_pipeline(pipeline, dict(doc))
                index["docs"][meta["_id"]] = doc
                items.append({"index": {"_index": meta["_index"], "_id": meta["_id"], "_version": 1,
                                        "result": "created", "status": 201}})
            except ValueError as exc:
                errors = True
                items.append({"index": {"_index": meta["_index"], "_id": meta["_id"], "status": 400,
                                        "error": {"type": "illegal_argument_exception", "reason": str(exc)}}})
        return 200, {"took": 3, "errors": errors, "items": items}

    def _info(self, _params, _body):
        return 200, {"name": "node-1", "cluster_name": "fake", "version": {
            "distribution": "opensearch", "number": self.version, "lucene_version": "10.2.1"},
            "tagline": "The OpenSearch Project: https://opensearch.org/"}

    def _since(self, major: int, minor: int) -> bool:
        return tuple(int(p) for p in self.version.split("-")[0].split(".")[:2]) >= (major, minor)

    def _rrf_weights(self) -> bool:
        return self._since(3, 1)

    def _search_pipeline_put(self, _params, body, name: str):
        problem = _search_pipeline_problem(body, score_ranker=self.score_ranker, rrf_weights=self._rrf_weights(),
                                           z_score=self._since(3, 0))
        if problem:
            return error_body(400, "illegal_argument_exception", problem)
        self.search_pipelines[name] = body
        return 200, {"acknowledged": True}

    def _search_pipeline_get(self, _params, _body, name: str):
        if name not in self.search_pipelines:
            return 404, {}  # OpenSearch answers an unknown search pipeline with 404 and an empty object
        return 200, {name: self.search_pipelines[name]}

    def _search_pipeline_delete(self, _params, _body, name: str):
        if self.search_pipelines.pop(name, None) is None:
            return error_body(404, "resource_not_found_exception", f"pipeline [{name}] is missing")
        return 200, {"acknowledged": True}

    def _score_clause(self, index: dict, clause: dict) -> tuple[list[tuple[float, str]], tuple[int, dict] | None]:
        """(score, doc id) of the documents one query clause matches, or an error answer."""
        (kind, spec), = clause.items()
        (field_name, query), = spec.items()
        if kind == "match":
            words = set(str(query["query"] if isinstance(query, dict) else query).lower().split())
            return [(float(len(words & set(str(doc.get(field_name, "")).lower().split()))), doc_id)
                    for doc_id, doc in index["docs"].items()
                    if words & set(str(doc.get(field_name, "")).lower().split())], None
        model = self.models.get(query["model_id"])
        if model is None or model["model_state"] not in ("DEPLOYED", "PARTIALLY_DEPLOYED"):
            return [], error_body(400, "illegal_argument_exception",
                                  "Model not ready yet. Please deploy the model first.")
        scored = []
        for doc_id, doc in index["docs"].items():
            if kind == "neural":
                vector = fake_embedding(query["query_text"], len(doc[field_name]))
                score = _cosine(vector, doc[field_name])
            else:
                tokens = (self.sparse_tokenize(query["model_id"], query["query_text"])
                          if model["algorithm"] == "SPARSE_TOKENIZE" else fake_sparse(query["query_text"]))
                score = sum(weight * doc[field_name].get(token, 0.0) for token, weight in tokens.items())
            if score > 0:
                scored.append((score, doc_id))
        return scored, None

    def _index_search(self, params, body, index_name: str):
        index = self.indices.get(index_name)
        if index is None:
            return self._missing_index(index_name)
        (kind, spec), = body["query"].items()
        if kind == "hybrid":
            name = params.get("search_pipeline")
            if name not in self.search_pipelines:
                return error_body(404, "illegal_argument_exception", f"Pipeline {name} is not defined")
            clauses = spec["queries"]
            if not 1 <= len(clauses) <= 5:
                return error_body(400, "parsing_exception", "Number of sub-queries exceeds maximum supported")
            lists = []
            for clause in clauses:
                scored, error = self._score_clause(index, clause)
                if error:
                    return error
                lists.append(sorted(((s, d) for s, d in scored), key=lambda item: (-item[0], item[1])))
            fused, problem = _fuse(self.search_pipelines[name], lists, rrf_weights=self._rrf_weights())
            if problem:
                return error_body(400, "illegal_argument_exception", problem)
            scored = [(score, doc_id, index["docs"][doc_id]) for doc_id, score in fused.items()]
        else:
            pairs, error = self._score_clause(index, body["query"])
            if error:
                return error
            scored = [(score, doc_id, index["docs"][doc_id]) for score, doc_id in pairs]
        scored.sort(key=lambda item: (-item[0], item[1]))
        hits = [{"_index": index_name, "_id": doc_id, "_score": score, "_source": {"text": doc["text"]}}
                for score, doc_id, doc in scored[: int(body.get("size", 10))]]
        return 200, {"took": 2, "timed_out": False, "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                     "hits": {"total": {"value": len(scored), "relation": "eq"},
                              "max_score": hits[0]["_score"] if hits else None, "hits": hits}}


def _weights_problem(weights: list | None) -> str | None:
    if weights is not None and (any(not 0.0 <= w <= 1.0 for w in weights) or abs(sum(weights) - 1.0) > 1e-4):
        return "sum of weights for combination must be equal to 1.0"
    return None


def _search_pipeline_problem(body: dict, *, score_ranker: bool = True, rrf_weights: bool = True,
                             z_score: bool = True) -> str | None:
    """What OpenSearch would refuse in a search pipeline body with a normalization or score-ranker processor."""
    for processor in (body or {}).get("phase_results_processors") or []:
        (kind, spec), = processor.items()
        if kind == "normalization-processor":
            technique = (spec.get("normalization") or {}).get("technique", "min_max")
            if technique not in ("min_max", "l2", *(("z_score",) if z_score else ())):
                return f"provided normalization technique [{technique}] is not supported"
            combination = spec.get("combination") or {}
            if combination.get("technique", "arithmetic_mean") not in ("arithmetic_mean", "geometric_mean",
                                                                        "harmonic_mean"):
                return f"provided combination technique [{combination.get('technique')}] is not supported"
            if technique == "z_score" and combination.get("technique", "arithmetic_mean") != "arithmetic_mean":
                return "Z Score supports only arithmetic_mean combination technique"
            problem = _weights_problem((combination.get("parameters") or {}).get("weights"))
            if problem:
                return problem
        elif kind == "score-ranker-processor" and score_ranker:
            combination = spec.get("combination") or {}
            if combination.get("technique") != "rrf":
                return f"provided combination technique [{combination.get('technique')}] is not supported"
            if not 1 <= int(combination.get("rank_constant", 60)) < 10_000:
                return "rank_constant must be >= 1 and < 10000"
            problem = _weights_problem((combination.get("parameters") or {}).get("weights")) if rrf_weights else None
            if problem:
                return problem
        else:
            return f"Invalid processor type {kind}"
    return None


def _fuse(pipeline: dict, lists: list[list[tuple[float, str]]], *,
          rrf_weights: bool = True) -> tuple[dict[str, float], str | None]:
    """Documented fusion of ranked (score, doc id) lists: normalisation per list, then the weighted combination."""
    processors = pipeline.get("phase_results_processors") or []
    if not processors:
        return {}, "a hybrid query needs a search pipeline with a normalization or score-ranker processor"
    (kind, spec), = processors[0].items()
    fused: dict[str, float] = {}
    if kind == "score-ranker-processor":
        constant = int(spec["combination"].get("rank_constant", 60))
        given = (spec["combination"].get("parameters") or {}).get("weights") if rrf_weights else None
        if given is not None and len(given) != len(lists):
            return {}, f"number of weights [{len(given)}] must match number of sub-queries [{len(lists)}]"
        for ranked, weight in zip(lists, given or [1.0] * len(lists)):
            for rank, (_, doc_id) in enumerate(ranked, start=1):
                fused[doc_id] = fused.get(doc_id, 0.0) + weight / (constant + rank)
        return fused, None
    technique = (spec.get("normalization") or {}).get("technique", "min_max")
    combination = spec.get("combination") or {}
    weights = (combination.get("parameters") or {}).get("weights") or [1.0] * len(lists)
    if len(weights) != len(lists):
        return {}, f"number of weights [{len(weights)}] must match number of sub-queries [{len(lists)}]"
    per_doc: dict[str, list] = {}
    for position, ranked in enumerate(lists):
        scores = [score for score, _ in ranked]
        if technique == "z_score" and scores:  # neural-search: the mean and sample deviation of the returned scores
            mean = statistics.fmean(scores)
            deviation = statistics.stdev(scores) if len(scores) > 1 else 0.0
        for score, doc_id in ranked:
            if technique == "min_max":
                low, high = min(scores), max(scores)
                value = 1.0 if high == low else ((score - low) / (high - low) or 0.001)
            elif technique == "z_score":
                z = (score - mean) / deviation if deviation else 0.0
                value = max(scores) if score == mean else min(scores) if deviation == 0 else z if z > 0 else 0.001
            else:  # l2
                value = score / math.sqrt(sum(s * s for s in scores))
            per_doc.setdefault(doc_id, [None] * len(lists))[position] = value
    how = combination.get("technique", "arithmetic_mean")
    for doc_id, values in per_doc.items():
        present = [(v, w) for v, w in zip(values, weights) if v is not None and (v >= 0 if how == "arithmetic_mean"
                                                                                 else v > 0)]
        total = sum(w for _, w in present)
        if not total:
            fused[doc_id] = 0.0
        elif how == "arithmetic_mean":
            fused[doc_id] = sum(v * w for v, w in present) / total
        elif how == "geometric_mean":
            fused[doc_id] = math.exp(sum(w * math.log(v) for v, w in present) / total)
        else:
            fused[doc_id] = total / sum(w / v for v, w in present)
    return fused, None


def _flatten_into(prefix: str, value: Any, out: dict) -> None:
    if isinstance(value, dict):
        for key, child in value.items():
            _flatten_into(f"{prefix}.{key}" if prefix else key, child, out)
    else:
        out[prefix] = value


def _nest(flat: dict) -> dict:
    nested: dict = {}
    for key, value in flat.items():
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True      # headers and body go out in two writes: no 40 ms delayed-ACK stalls

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        fake: FakeMLCommons = self.server.fake  # type: ignore[attr-defined]
        result = fake.dispatch(self.command, unquote(parts.path), params, body, dict(self.headers))
        if result is DROP:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        status, payload = result
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, *args) -> None:  # keep test output clean
        pass


@contextmanager
def running_fake(**kwargs) -> Iterator[FakeMLCommons]:
    fake = FakeMLCommons(**kwargs).start()
    try:
        yield fake
    finally:
        fake.stop()
