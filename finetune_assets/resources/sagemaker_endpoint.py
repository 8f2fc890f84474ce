"""Where and as whom models are served on SageMaker; the calls themselves are in clients/sagemaker_endpoint.py."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from finetune_assets.clients import sagemaker_endpoint as endpoints
from finetune_assets.clients.sagemaker_training.aws import join_s3, make_client
from finetune_assets.clients.sagemaker_training.jobs import PollSettings


class SageMakerEndpointResource(ConfigurableResource):
    """Account-level settings of the model endpoint; per-run choices (mode, instances) are ModelEndpointConfig."""

    default_deployment: str = Field(default="none", description="What model_endpoint's deployment 'auto' means: none, "
                                    "or serverless (FINETUNE_MODE=aws)")
    region_name: str = Field(default="", description="AWS region ('' = from the environment)")
    role_arn: str = Field(default="", description="SageMaker execution role ARN the endpoint's containers run as")
    bucket: str = Field(default="", description="S3 bucket for model.tar.gz ('' = the storage root's bucket)")
    key_prefix: str = Field(default="finetune-endpoints", description="Key prefix for model.tar.gz under the bucket")
    name_prefix: str = Field(default="finetune", description="Prefix of endpoint, model and endpoint-config names")
    endpoint_name: str = Field(default="", description="Fixed endpoint name ('' = <name_prefix>-<index>)")
    connector_role_arn: str = Field(default="", description="IAM role OpenSearch assumes to invoke the endpoint "
                                                            "(the ml-commons connector credential)")
    poll_initial_s: float = 15.0
    poll_max_s: float = 60.0
    timeout_s: float = Field(default=3600.0, description="Longest wait for InService")

    def model_data_prefix(self, index: str, storage_bucket: str = "") -> str:
        bucket = self.bucket or storage_bucket
        if not bucket:
            raise ValueError("no S3 bucket for model.tar.gz: set FINETUNE_SAGEMAKER_BUCKET (the sagemaker_endpoint "
                             "resource's bucket) or use an s3:// storage root")
        return join_s3(f"s3://{bucket}", self.key_prefix, index)

    def deploy(self, model_dir: str | Path, spec: endpoints.EndpointSpec, *, index: str, storage_bucket: str = "",
               on_status: Callable[[str], None] | None = None,
               sleep: Callable[[float], None] = time.sleep) -> tuple[endpoints.Deployment, str]:
        """Deploy and smoke-test; returns the deployment and the shape of the smoke-test answer."""
        region = self.region_name or None
        sagemaker = make_client("sagemaker", region)
        poll = PollSettings(initial_s=self.poll_initial_s, max_s=self.poll_max_s, timeout_s=self.timeout_s)
        deployment = endpoints.deploy_endpoint(
            sagemaker, make_client("s3", region), model_dir, spec, index=index,
            model_data_prefix=self.model_data_prefix(index, storage_bucket), endpoint_name=self.endpoint_name,
            name_prefix=self.name_prefix, poll=poll, on_status=on_status, sleep=sleep)
        shape = endpoints.smoke_test(make_client("sagemaker-runtime", region), deployment)
        return deployment, shape
