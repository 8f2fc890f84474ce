"""BedrockBatchClient: synthetic queries for a corpus through Bedrock batch inference, end to end.

It combines the steps of the other modules (plan, upload, create and poll jobs, read outputs, Converse below
the batch minimum) for one model and one S3 location. Every client uses botocore's standard retry mode.
"""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from finetune_assets.clients.bedrock.aws import make_client
from finetune_assets.clients.bedrock.converse import ConverseFallback
from finetune_assets.clients.bedrock.jobs import BatchJobs
from finetune_assets.clients.bedrock.model_bodies import PromptFn
from finetune_assets.clients.bedrock.outputs import BatchOutputReader, BatchOutputs, RecordParser
from finetune_assets.clients.bedrock.planning import BatchPlanner
from finetune_assets.clients.bedrock.settings import (
    DEFAULT_QUOTAS,
    BatchJobOptions,
    BatchQuotas,
    ConverseRetry,
    GenerationSettings,
    PollSettings,
)

logger = logging.getLogger(__name__)


class BedrockBatchClient(BatchPlanner, BatchJobs, BatchOutputReader, ConverseFallback):
    """Bedrock batch inference (and the Converse fallback) for one model and one S3 location.

    Clients are created lazily with ``make_client`` (standard retries); tests inject stubbed ones. ``sleep``,
    ``clock`` and ``rng`` are injectable so polling and backoff run instantly under test.
    """

    def __init__(self, *, region_name: str | None = None, bedrock=None, bedrock_runtime=None, s3=None,
                 quotas: BatchQuotas = DEFAULT_QUOTAS, poll: PollSettings = PollSettings(),
                 converse_retry: ConverseRetry = ConverseRetry(), sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
                 log: Any = None, max_error_samples: int = 20):
        self.region_name = region_name
        self._bedrock, self._runtime, self._s3 = bedrock, bedrock_runtime, s3
        self.quotas, self.poll, self.converse_retry = quotas, poll, converse_retry
        self.sleep, self.clock = sleep, clock
        self.rng = rng or random.Random(0)
        self.log = log or logger
        self.max_error_samples = max_error_samples

    # -- clients ---------------------------------------------------------------------------------------------
    @property
    def bedrock(self):
        if self._bedrock is None:
            self._bedrock = make_client("bedrock", region_name=self.region_name)
        return self._bedrock

    @property
    def runtime(self):
        if self._runtime is None:
            # Few botocore attempts: the Converse loop below does the longer backoff itself.
            self._runtime = make_client("bedrock-runtime", region_name=self.region_name, max_attempts=3,
                                        read_timeout=300)
        return self._runtime

    @property
    def s3(self):
        if self._s3 is None:
            self._s3 = make_client("s3", region_name=self.region_name)
        return self._s3


    def generate(self, documents: Sequence[Mapping[str, Any]], *, index: str, s3_base_uri: str, model_id: str,
                 prompt_fn: PromptFn, options: BatchJobOptions, settings: GenerationSettings = GenerationSettings(),
                 existing_job_arns: Sequence[str] = (), on_job_created: Callable[[str], None] | None = None,
                 on_status: Callable[[str, str, dict], None] | None = None, idempotency_salt: str = "",
                 model_family_override: str | None = None, id_field: str = "id",
                 include_model_input: bool = False, record_parser: RecordParser | None = None,
                 workdir: str | Path | None = None) -> BatchOutputs:
        """Queries for every document: batch jobs (or Converse below the batch minimum), outputs read back.

        Re-attach: pass the ARNs recorded by ``on_job_created`` as ``existing_job_arns``; jobs are matched to parts
        by name and only missing parts are created.
        """
        plan = self.prepare(documents, index=index, s3_base_uri=s3_base_uri, model_id=model_id, prompt_fn=prompt_fn,
                            settings=settings, model_family_override=model_family_override, id_field=id_field,
                            idempotency_salt=idempotency_salt, workdir=workdir)
        try:
            if plan.mode == "empty" and not existing_job_arns:
                return BatchOutputs(mode="empty")
            if plan.mode == "on_demand" and not existing_job_arns:
                return self.converse_records(documents, model_id=model_id, prompt_fn=prompt_fn, settings=settings,
                                             model_family_override=plan.model_family, id_field=id_field,
                                             include_model_input=include_model_input)
            descriptions = self.run_jobs(plan, options, existing_job_arns=existing_job_arns,
                                         on_job_created=on_job_created, on_status=on_status)
            return self.read_job_outputs(descriptions, expected_record_ids=plan.record_ids,
                                         include_model_input=include_model_input, record_parser=record_parser)
        finally:
            plan.cleanup()
