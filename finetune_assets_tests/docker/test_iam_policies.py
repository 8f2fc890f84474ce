"""The IAM policies in docker/iam/: well-formed, least privilege, and covering every AWS call the code makes.

The coverage check scans finetune_assets/ (and the library classes the deployment configures) with
finetune_assets_tests.fakes.aws_calls: a new boto3 call whose IAM action is not in the role's policy fails here.
"""
from __future__ import annotations

import json
import re
import string
from functools import lru_cache
from pathlib import Path

import pytest

from finetune_assets_tests.fakes import aws_calls
from finetune_assets_tests.fakes.aws_calls import DAGSTER, SAGEMAKER_JOB, scan_source

IAM = aws_calls.ROOT / "docker" / "iam"
POLICY_FILES = sorted(IAM.glob("*.json"))
ROLE_POLICIES = [p for p in POLICY_FILES if not p.name.endswith("-trust-policy.json")]
TRUST_POLICIES = [p for p in POLICY_FILES if p.name.endswith("-trust-policy.json")]
POLICY_OF_ROLE = {DAGSTER: "dagster-role-policy.json", SAGEMAKER_JOB: "sagemaker-execution-role-policy.json"}

# IAM actions that authorise something other than an API operation of the same name.
PERMISSION_ONLY = {
    "iam:PassRole": "handing a role to a service (CreateTrainingJob, CreateModelInvocationJob, RunTask, ...)",
    "s3:ListBucket": "ListObjects/ListObjectsV2/HeadBucket",
    "es:ESHttpGet": "HTTP requests to an OpenSearch Service domain", "es:ESHttpHead": "same",
    "es:ESHttpPost": "same", "es:ESHttpPut": "same", "es:ESHttpDelete": "same",
}
# Actions AWS only accepts with "Resource": "*" (no resource type in the Service Authorization Reference).
STAR_RESOURCE_ACTIONS = {
    "bedrock:ListModelInvocationJobs": "list actions have no resource type",
    "ecs:RegisterTaskDefinition": "no resource-level permissions",
    "ecs:DescribeTaskDefinition": "no resource-level permissions",
    "ec2:DescribeNetworkInterfaces": "EC2 Describe* actions take no resource",
    "ecr:GetAuthorizationToken": "the token is registry-wide",
    "cloudwatch:PutMetricData": "no resource type; narrowed by the cloudwatch:namespace condition instead",
}
# PassRole without an iam:PassedToService condition, and why.
PASSROLE_WITHOUT_SERVICE = {
    "${OPENSEARCH_CONNECTOR_ROLE}": "OpenSearch checks PassRole itself when a connector names a role (ml-commons "
                                    "tutorial); no iam:PassedToService value is documented for that check",
}
SAMPLE_VALUES = {
    "ACCOUNT_ID": "111122223333", "REGION": "eu-west-1", "BUCKET": "acme-finetune", "NAME_PREFIX": "finetune",
    "ECS_CLUSTER": "dagster", "RUN_LOG_GROUP": "/ecs/dagster-runs", "DAGSTER_ROLE": "finetune-dagster",
    "RUN_EXECUTION_ROLE": "finetune-run-execution", "SAGEMAKER_EXECUTION_ROLE": "finetune-sagemaker",
    "BEDROCK_BATCH_ROLE": "finetune-bedrock-batch", "OPENSEARCH_CONNECTOR_ROLE": "finetune-opensearch-connector",
    "OPENSEARCH_DOMAIN": "search", "ECR_REPOSITORY": "finetune-assets", "DLC_ACCOUNT_ID": "763104351884",
}
ACTION = re.compile(r"^[a-z0-9-]+:[A-Za-z0-9]+$")
ARN = re.compile(r"^arn:aws:([a-z0-9-]+):([^:]*):([^:]*):(.+)$")


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def statements(policy: dict) -> list[dict]:
    return policy["Statement"] if isinstance(policy["Statement"], list) else [policy["Statement"]]


def listed(value) -> list:
    return value if isinstance(value, list) else [value]


@lru_cache(maxsize=None)
def operations_under(prefix: str) -> frozenset[str]:
    """API operations of every botocore service that signs as this IAM prefix (bedrock + bedrock-runtime, ...)."""
    import botocore.session

    names = frozenset()
    for service in botocore.session.get_session().get_available_services():
        if (service == prefix or service.startswith(prefix)) and aws_calls.iam_prefix(service) == prefix:
            names |= frozenset(aws_calls.service_model(service).operation_names)
    return names


def allowed_actions(policy: dict) -> set[str]:
    return {a.lower() for s in statements(policy) if s["Effect"] == "Allow" for a in listed(s["Action"])}


def not_allowed(calls, policy: dict) -> list[str]:
    actions = allowed_actions(policy)
    return sorted({f"{action} ({call.service}.{call.operation} at {call.where})" for call in calls
                   for action in call.iam_actions if action.lower() not in actions})


@pytest.fixture(scope="module")
def scanned():
    return aws_calls.all_calls()


# ------------------------------------------------------------------------------------------------ well-formed
def test_every_role_policy_has_a_trust_policy():
    assert {p.name.replace("-policy.json", "") for p in ROLE_POLICIES} == \
        {p.name.replace("-trust-policy.json", "") for p in TRUST_POLICIES}
    assert {"dagster-role-policy.json", "sagemaker-execution-role-policy.json", "bedrock-batch-service-role-policy.json",
            "opensearch-connector-role-policy.json"} <= {p.name for p in ROLE_POLICIES}


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.name)
def test_policy_is_valid_json_with_real_actions(path):
    policy = load(path)
    assert policy["Version"] == "2012-10-17"
    assert statements(policy), f"{path.name} has no statement"
    for statement in statements(policy):
        assert statement["Effect"] in ("Allow", "Deny")
        for action in listed(statement["Action"]):
            assert ACTION.match(action), f"{path.name}: {action!r} is not service:Action (no wildcards)"
            prefix, name = action.split(":")
            assert action in PERMISSION_ONLY or name in operations_under(prefix), \
                f"{path.name}: {action} is no {prefix} API operation (typo?)"


@pytest.mark.parametrize("path", ROLE_POLICIES, ids=lambda p: p.name)
def test_resources_are_scoped(path):
    for statement in statements(load(path)):
        actions = listed(statement["Action"])
        prefixes = {a.split(":")[0] for a in actions}
        for resource in listed(statement["Resource"]):
            if resource == "*":
                unexplained = [a for a in actions if a not in STAR_RESOURCE_ACTIONS]
                assert not unexplained, f"{path.name} {statement['Sid']}: {unexplained} on '*'"
                continue
            match = ARN.match(resource)
            assert match, f"{path.name} {statement['Sid']}: {resource!r} is not an ARN"
            assert match.group(1) in prefixes, f"{path.name} {statement['Sid']}: {resource} is not a {prefixes} ARN"
            assert match.group(4).strip("*/:") and match.group(3) != "*", \
                f"{path.name} {statement['Sid']}: {resource} names no resource"


@pytest.mark.parametrize("path", ROLE_POLICIES, ids=lambda p: p.name)
def test_passrole_names_the_role_and_the_service(path):
    for statement in statements(load(path)):
        if "iam:PassRole" not in listed(statement["Action"]):
            continue
        assert listed(statement["Action"]) == ["iam:PassRole"], "keep PassRole in statements of its own"
        for resource in listed(statement["Resource"]):
            assert re.fullmatch(r"arn:aws:iam::\$\{ACCOUNT_ID\}:role/\$\{[A-Z_]+\}", resource), resource
        service = statement.get("Condition", {}).get("StringEquals", {}).get("iam:PassedToService")
        roles = {r.rsplit("/", 1)[1] for r in listed(statement["Resource"])}
        assert service or roles <= set(PASSROLE_WITHOUT_SERVICE), f"{statement['Sid']}: no iam:PassedToService"


@pytest.mark.parametrize("path", TRUST_POLICIES, ids=lambda p: p.name)
def test_trust_policies_let_one_service_assume_the_role(path):
    for statement in statements(load(path)):
        assert statement["Action"] == "sts:AssumeRole" and statement["Effect"] == "Allow"
        assert set(statement["Principal"]) == {"Service"}
        assert all(s.endswith(".amazonaws.com") for s in listed(statement["Principal"]["Service"]))


def test_bedrock_trust_is_limited_to_the_account_and_its_batch_jobs():
    condition = statements(load(IAM / "bedrock-batch-service-role-trust-policy.json"))[0]["Condition"]
    assert condition["StringEquals"]["aws:SourceAccount"] == "${ACCOUNT_ID}"
    assert condition["ArnLike"]["aws:SourceArn"].endswith(":${ACCOUNT_ID}:model-invocation-job/*")


def test_connector_role_may_only_invoke_the_endpoints():
    (statement,) = statements(load(IAM / "opensearch-connector-role-policy.json"))
    assert statement["Action"] == ["sagemaker:InvokeEndpoint"]
    assert all(":endpoint/" in r for r in listed(statement["Resource"]))


def test_placeholders_are_documented_and_render_to_valid_policies():
    readme = (IAM / "README.md").read_text()
    documented = set(re.findall(r"^\| `\$\{([A-Z_]+)\}` \|", readme, re.M))   # the placeholder table
    used = {name for p in POLICY_FILES for name in re.findall(r"\$\{([A-Z_]+)\}", p.read_text())}
    assert used == documented == set(SAMPLE_VALUES), (used ^ documented, used ^ set(SAMPLE_VALUES))
    for path in POLICY_FILES:
        rendered = string.Template(path.read_text()).substitute(SAMPLE_VALUES)
        assert "${" not in rendered
        for statement in statements(json.loads(rendered)):
            for resource in listed(statement.get("Resource", [])):
                assert resource == "*" or ARN.match(resource), resource


# ------------------------------------------------------------------------------------------------ coverage
def test_the_scanner_finds_the_calls_the_code_is_known_to_make(scanned):
    calls, _ = scanned
    found = {(c.role, c.service, c.operation) for c in calls}
    # One call per client module, so a scanner that silently finds nothing cannot pass the coverage test.
    assert {(DAGSTER, "bedrock", "CreateModelInvocationJob"), (DAGSTER, "sagemaker", "CreateTrainingJob"),
            (DAGSTER, "s3", "PutObject"), (DAGSTER, "ecs", "RunTask"), (SAGEMAKER_JOB, "s3", "GetObject")} <= found


@pytest.mark.parametrize("role", [DAGSTER, SAGEMAKER_JOB])
def test_every_aws_call_is_allowed_by_the_role_policy(role, scanned):
    calls, unresolved = scanned
    assert not unresolved, "cannot tell which AWS client these calls use (name the receiver after the service, " \
                           "or build the client in view):\n" + "\n".join(unresolved)
    mine = [c for c in calls if c.role == role]
    missing = not_allowed(mine, load(IAM / POLICY_OF_ROLE[role]))
    assert not missing, (f"docker/iam/{POLICY_OF_ROLE[role]} does not allow:\n  " + "\n  ".join(missing)
                         + "\n\nAWS calls found:\n" + aws_calls.table(mine))


SYNTHETIC = '''
import boto3
from opensearchpy import OpenSearch
from finetune_assets.clients.bedrock.aws import make_client


class Deployer:
    def __init__(self, sagemaker_client=None):
        self._sagemaker = sagemaker_client or make_client("sagemaker", region_name="eu-west-1")

    @property
    def logs(self):
        return boto3.client("logs")

    def run(self, s3, search: OpenSearch):
        self._sagemaker.delete_endpoint(EndpointName="e")
        s3.delete_bucket(Bucket="b")
        self.logs.get_paginator("filter_log_events").paginate(logGroupName="g")
        search.search(index="docs")          # an OpenSearch client, not SageMaker Search
        self.create_job()                    # our own method


def wait(name):
    client = boto3.client("sagemaker")
    create = client.create_model             # a reference is a call made later
    client.get_waiter("endpoint_in_service").wait(EndpointName=name)
    return create


def unclear(thing):
    thing.list_tags_for_resource(resourceArn="x")
'''


def test_scanner_follows_clients_and_reports_what_the_policy_lacks():
    calls, unresolved = scan_source(SYNTHETIC, "synthetic.py", DAGSTER)
    assert sorted((c.service, c.operation) for c in calls) == [
        ("logs", "FilterLogEvents"), ("s3", "DeleteBucket"), ("sagemaker", "CreateModel"),
        ("sagemaker", "DeleteEndpoint"), ("sagemaker", "DescribeEndpoint")]
    assert len(unresolved) == 1 and "thing.list_tags_for_resource" in unresolved[0]
    missing = not_allowed(calls, load(IAM / "dagster-role-policy.json"))
    assert [m.split(" ")[0] for m in missing] == ["s3:DeleteBucket"]
