from typing import Optional

from dagster import ConfigurableResource
from pydantic import Field

from finetune_assets.clients.bedrock.client import BedrockBatchClient
from finetune_assets.clients.bedrock.model_bodies import model_family
from finetune_assets.clients.bedrock.settings import BatchJobOptions, GenerationSettings, PollSettings
from finetune_assets.core.querygen.prompts import max_answer_tokens
from finetune_assets.resources.storage import ArtifactStorage

# Cheap, batch-capable in most Bedrock regions as an in-region model id (no geo prefix to match the region).
DEFAULT_BEDROCK_MODEL_ID = "amazon.nova-lite-v1:0"
BACKENDS = ("smollm2", "openai", "bedrock")


class QueryGeneratorResource(ConfigurableResource):
    """Which model writes the synthetic queries. Local SmolLM2 by default; an OpenAI-compatible server or
    Amazon Bedrock (batch inference, Converse below the batch minimum) by config.

    Every backend writes the same record layout, so everything downstream is shared.
    """

    backend: str = Field(default="smollm2", description="smollm2 (offline default), openai (OpenAI-compatible "
                                                         "server) or bedrock (Bedrock batch inference)")
    batch_size: int = Field(default=8, description="Documents per generation batch (local backend)")
    base_url: str = Field(default="", description="OpenAI-compatible server, e.g. http://localhost:11434/v1 (Ollama)")
    model: str = Field(default="", description="Model name on the OpenAI-compatible server")
    api_key: str = Field(default="", description="API key for the server; set it with EnvVar, it is never logged")
    seed: int = 0
    # -- bedrock -------------------------------------------------------------------------------------------------
    model_id: str = Field(default=DEFAULT_BEDROCK_MODEL_ID,
                          description="Bedrock model or inference profile id (Anthropic Claude or Amazon Nova)")
    region_name: str = Field(default="", description="AWS region for Bedrock (default: the AWS SDK's)")
    role_arn: str = Field(default="", description="Service role Bedrock batch jobs run as (reads the inputs and "
                                                  "writes the outputs in the storage bucket)")
    temperature: float = Field(default=0.3, description="Sampling temperature (bedrock)")
    job_timeout_hours: Optional[int] = Field(default=None, description="Batch job timeout, 24-168 (Bedrock's "
                                                                       "default 24 when unset)")
    vpc_subnet_ids: list[str] = Field(default=[], description="Run batch jobs in a VPC: subnets")
    vpc_security_group_ids: list[str] = Field(default=[], description="Run batch jobs in a VPC: security groups")
    output_kms_key_id: str = Field(default="", description="KMS key Bedrock encrypts the job outputs with")
    job_tags: dict[str, str] = Field(default={}, description="Tags on the batch jobs (needs bedrock:TagResource)")
    idempotency_salt: str = Field(default="", description="Change it to start new jobs for the same corpus and "
                                                          "settings (e.g. after a failed job)")
    poll_interval_s: float = Field(default=30.0, description="First wait between job status checks")
    poll_max_interval_s: float = Field(default=300.0, description="Longest wait between job status checks")

    @property
    def is_bedrock(self) -> bool:
        return self.backend.strip().lower() == "bedrock"

    def create(self):
        from finetune_assets.core.querygen import make_generator

        if self.backend == "smollm2":
            return make_generator("smollm2", batch_size=self.batch_size, seed=self.seed)
        if self.backend == "openai":
            if not self.base_url or not self.model:
                raise ValueError("query generator backend 'openai' needs base_url and model")
            return make_generator("openai", base_url=self.base_url, model=self.model, api_key=self.api_key or None)
        if self.is_bedrock:
            raise ValueError("backend 'bedrock' has no local generator: use bedrock_client()")
        raise ValueError(f"unknown query generator backend {self.backend!r}; use one of {', '.join(BACKENDS)}")

    # -- bedrock -------------------------------------------------------------------------------------------------
    def bedrock_job_options(self, storage: ArtifactStorage) -> BatchJobOptions:
        """Job options, after checking what the bedrock backend needs (so a run fails before any AWS call)."""
        if not storage.is_s3:
            raise ValueError(f"query generator backend 'bedrock' needs S3 storage (Bedrock batch reads its inputs "
                             f"from and writes its outputs to S3), but the storage root is {storage.root!r}: set "
                             f"FINETUNE_STORAGE_ROOT=s3://bucket/prefix")
        if not self.role_arn:
            raise ValueError("query generator backend 'bedrock' needs role_arn (FINETUNE_BEDROCK_ROLE_ARN): the "
                             "service role Bedrock batch jobs run as")
        model_family(self.model_id)  # a clear error now for a model whose request format is unknown
        # Inputs are uploaded with the storage's own encryption settings.
        return BatchJobOptions(role_arn=self.role_arn, timeout_hours=self.job_timeout_hours,
                               vpc_subnet_ids=tuple(self.vpc_subnet_ids),
                               vpc_security_group_ids=tuple(self.vpc_security_group_ids),
                               output_kms_key_id=self.output_kms_key_id or None,
                               s3_sse=storage.server_side_encryption, s3_kms_key_id=storage.kms_key_id or None,
                               tags=dict(self.job_tags))

    def bedrock_settings(self, queries_per_type: int) -> GenerationSettings:
        return GenerationSettings(max_tokens=max_answer_tokens(queries_per_type), temperature=self.temperature)

    def bedrock_client(self, log=None) -> BedrockBatchClient:
        poll = PollSettings(initial_interval_s=self.poll_interval_s, max_interval_s=self.poll_max_interval_s)
        return BedrockBatchClient(region_name=self.region_name or None, poll=poll, log=log)
