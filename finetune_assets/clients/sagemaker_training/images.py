"""Pick the training container image (the Hugging Face PyTorch DLC of a region) and the distribution settings.

Image URI pattern (Hugging Face and AWS DLC docs): ``{account}.dkr.ecr.{region}.amazonaws.com/
huggingface-pytorch-training:{pytorch}-transformers{transformers}-{device}-{py}-{cuda}-{os}``; the account is per
region (``HF_DLC_ACCOUNTS``, from the SageMaker Python SDK's ``image_uri_config/huggingface.json``).
"""
from __future__ import annotations

import json

HF_IMAGE_DOC_URL = "https://huggingface.co/docs/sagemaker/reference"
HF_TRAINING_REPOSITORY = "huggingface-pytorch-training"
# DLC release v1.0-hf-5.3.0-pt-2.9.0-tr-gpu-py312 (aws/deep-learning-containers, 2026-04): PyTorch 2.9.0,
# transformers 5.3.0 (sentence-transformers 6.x needs transformers 5), Python 3.12, CUDA 13.0. GPU only.
DEFAULT_HF_IMAGE_TAG = "2.9.0-transformers5.3.0-gpu-py312-cu130-ubuntu22.04"
DEFAULT_DLC_ACCOUNT = "763104351884"
# Regions whose DLC registry is not 763104351884 (SageMaker Python SDK, image_uri_config/huggingface.json).
HF_DLC_ACCOUNTS: dict[str, str] = {
    "af-south-1": "626614931356",
    "ap-east-1": "871362719292",
    "ap-northeast-3": "364406365360",
    "ap-southeast-3": "907027046896",
    "cn-north-1": "727897471807",
    "cn-northwest-1": "727897471807",
    "eu-south-1": "692866216735",
    "il-central-1": "780543022126",
    "me-central-1": "914824155844",
    "me-south-1": "217643126080",
    "us-gov-west-1": "442386744353",
    "us-iso-east-1": "886529160074",
    **{region: DEFAULT_DLC_ACCOUNT for region in (
        "ap-northeast-1", "ap-northeast-2", "ap-south-1", "ap-southeast-1", "ap-southeast-2", "ca-central-1",
        "eu-central-1", "eu-north-1", "eu-west-1", "eu-west-2", "eu-west-3", "sa-east-1", "us-east-1", "us-east-2",
        "us-west-1", "us-west-2")},
}


DISTRIBUTIONS = ("auto", "none", "torch_distributed", "smddp")

# GPUs per instance for the instance types with more than one (others: one GPU, or none on CPU types).
MULTI_GPU_INSTANCES: dict[str, int] = {
    "ml.p2.8xlarge": 8, "ml.p2.16xlarge": 16, "ml.p3.8xlarge": 4, "ml.p3.16xlarge": 8, "ml.p3dn.24xlarge": 8,
    "ml.p4d.24xlarge": 8, "ml.p4de.24xlarge": 8, "ml.p5.48xlarge": 8, "ml.p5e.48xlarge": 8,
    "ml.p5en.48xlarge": 8, "ml.p6-b200.48xlarge": 8, "ml.p6-b300.48xlarge": 8, "ml.p6e-gb200.36xlarge": 4,
    "ml.g4dn.12xlarge": 4, "ml.g5.12xlarge": 4, "ml.g5.24xlarge": 4, "ml.g5.48xlarge": 8,
    "ml.g6.12xlarge": 4, "ml.g6.24xlarge": 4, "ml.g6.48xlarge": 8, "ml.g6e.12xlarge": 4, "ml.g6e.24xlarge": 4,
    "ml.g6e.48xlarge": 8,
}
# SageMaker distributed data parallel (SMDDP) runs on these instance types only.
SMDDP_INSTANCES = frozenset({"ml.p4d.24xlarge", "ml.p4de.24xlarge", "ml.p5.48xlarge"})


def hf_training_image_uri(region: str, tag: str = DEFAULT_HF_IMAGE_TAG) -> str:
    """The Hugging Face PyTorch training DLC for a region (the documented ``{account}.dkr.ecr...`` pattern)."""
    account = HF_DLC_ACCOUNTS.get(region)
    if account is None:
        raise ValueError(f"no known Hugging Face DLC registry for region {region!r}; pass image_uri explicitly "
                         f"(pattern: <account>.dkr.ecr.<region>.amazonaws.com/{HF_TRAINING_REPOSITORY}:<tag>, "
                         f"see {HF_IMAGE_DOC_URL})")
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{domain}/{HF_TRAINING_REPOSITORY}:{tag}"


def gpus_per_instance(instance_type: str) -> int:
    if instance_type in MULTI_GPU_INSTANCES:
        return MULTI_GPU_INSTANCES[instance_type]
    family = instance_type.split(".")[1] if instance_type.count(".") >= 2 else ""
    return 1 if family[:1] in ("p", "g") else 0


def resolve_distribution(distribution: str, instance_type: str, instance_count: int) -> str:
    """``auto`` is ``torch_distributed`` when there is more than one GPU in the job, else ``none``."""
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, not {distribution!r}")
    if distribution == "auto":
        return "torch_distributed" if instance_count > 1 or gpus_per_instance(instance_type) > 1 else "none"
    if distribution == "smddp" and instance_type not in SMDDP_INSTANCES:
        raise ValueError(f"SMDDP (sagemaker_distributed_dataparallel_enabled) runs only on "
                         f"{sorted(SMDDP_INSTANCES)}, not {instance_type}; use distribution='torch_distributed'")
    return distribution


def processes_per_instance(instance_type: str) -> int:
    """Training processes torchrun starts on one instance: one per GPU, or one on a CPU instance."""
    return max(1, gpus_per_instance(instance_type))


def training_processes(distribution: str, instance_type: str, instance_count: int) -> int:
    """Data-parallel processes a job runs the entry point in: one without a distribution, else one per GPU of
    every instance (one per CPU instance)."""
    if resolve_distribution(distribution, instance_type, instance_count) == "none":
        return 1
    return processes_per_instance(instance_type) * instance_count


def distribution_hyperparameters(distribution: str, instance_type: str) -> dict[str, str]:
    """The toolkit hyperparameters the SageMaker Python SDK's HuggingFace/PyTorch estimators set, JSON-encoded.

    ``torch_distributed`` -> ``sagemaker_torch_distributed_enabled`` (the toolkit starts ``torchrun --nnodes N
    --nproc_per_node <GPUs>`` with master address and node rank on multi-node jobs); ``smddp`` ->
    ``sagemaker_distributed_dataparallel_enabled`` (mpirun with the SMDDP library; the entry script must use it).
    Both add ``sagemaker_instance_type``.
    """
    if distribution == "torch_distributed":
        return {"sagemaker_torch_distributed_enabled": "true", "sagemaker_instance_type": json.dumps(instance_type)}
    if distribution == "smddp":
        return {"sagemaker_distributed_dataparallel_enabled": "true",
                "sagemaker_distributed_dataparallel_custom_mpi_options": json.dumps(""),
                "sagemaker_instance_type": json.dumps(instance_type)}
    return {}
