"""Every AWS API call the code makes, found statically, and the IAM actions each needs.

``python -m finetune_assets_tests.fakes.aws_calls`` prints the table; finetune_assets_tests/docker/test_iam_policies.py
checks it against the policies in docker/iam/.

How a call is found: the modules are parsed (``ast``) and every ``<receiver>.<method>(...)`` whose method is the
snake_case name of an operation of a watched AWS service (botocore's service models, ``xform_name``) is a
candidate. The receiver decides which service it is:

- a client built in the code (``boto3.client("s3")``, ``make_client("bedrock", ...)``, ``x or make_client(...)``),
  followed through local names, ``self.<attr>`` assignments, properties and functions that return one;
- otherwise a receiver named after a service (``s3``, ``self._sagemaker``, ``logs_client``), or, failing that,
  the only watched service that has that operation;
- receivers that cannot be a boto3 client are skipped: ``self``, imported modules and names, parameters
  annotated with a non-client type (``client: OpenSearch``) and module names bound to something else.

``get_paginator("op")``, ``get_waiter("name")`` and boto3's transfer helpers (``upload_file``, ...) count as the
operations they call. Calls made inside libraries the code configures (Dagster Pipes over S3, the ECS run
launcher, the S3 compute log manager) are found the same way in those libraries' classes.
"""
from __future__ import annotations

import ast
import importlib.util
import sys
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "finetune_assets"

# Services whose operation names are looked for, besides those the code builds clients for.
WATCHED = ("s3", "sagemaker", "sagemaker-runtime", "bedrock", "bedrock-runtime", "logs", "ecs", "ec2",
           "secretsmanager", "sts", "iam", "ecr", "cloudwatch")
CLIENT_FACTORIES = ("client", "make_client")
# Receiver names (leading underscores and a _client suffix dropped) that say which client they hold.
RECEIVER_HINTS = {"s3": "s3", "sagemaker": "sagemaker", "sm": "sagemaker", "sagemaker_runtime": "sagemaker-runtime",
                  "smr": "sagemaker-runtime", "bedrock": "bedrock", "bedrock_runtime": "bedrock-runtime",
                  "runtime": "bedrock-runtime", "logs": "logs", "cloudwatch_logs": "logs", "ecs": "ecs",
                  "ec2": "ec2", "secretsmanager": "secretsmanager", "secrets_manager": "secretsmanager",
                  "sts": "sts", "iam": "iam", "ecr": "ecr"}
# boto3's S3 transfer helpers and the operations they call (multipart above the 8 MB threshold).
TRANSFER_HELPERS = {
    "upload_file": ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload",
                    "AbortMultipartUpload"),
    "download_file": ("HeadObject", "GetObject"),
}
TRANSFER_HELPERS["upload_fileobj"] = TRANSFER_HELPERS["upload_file"]
TRANSFER_HELPERS["download_fileobj"] = TRANSFER_HELPERS["download_file"]
# Operations authorised by an IAM action of another name (Service Authorization Reference; the Converse API
# is authorised by bedrock:InvokeModel).
IAM_ACTIONS = {
    ("s3", "ListObjectsV2"): ("s3:ListBucket",), ("s3", "ListObjects"): ("s3:ListBucket",),
    ("s3", "HeadBucket"): ("s3:ListBucket",), ("s3", "HeadObject"): ("s3:GetObject",),
    ("s3", "CreateMultipartUpload"): ("s3:PutObject",), ("s3", "UploadPart"): ("s3:PutObject",),
    ("s3", "CompleteMultipartUpload"): ("s3:PutObject",), ("s3", "DeleteObjects"): ("s3:DeleteObject",),
    ("s3", "CopyObject"): ("s3:GetObject", "s3:PutObject"), ("s3", "UploadPartCopy"): ("s3:GetObject", "s3:PutObject"),
    ("s3", "ListObjectVersions"): ("s3:ListBucketVersions",),
    ("s3", "ListMultipartUploads"): ("s3:ListBucketMultipartUploads",),
    ("s3", "ListParts"): ("s3:ListMultipartUploadParts",),
    ("bedrock-runtime", "Converse"): ("bedrock:InvokeModel",),
    ("bedrock-runtime", "ConverseStream"): ("bedrock:InvokeModelWithResponseStream",),
}
IAM_PREFIX = {"cloudwatch": "cloudwatch"}   # its signing name is "monitoring"; the rest sign as their prefix

# Who makes the calls: the Dagster processes (webserver, daemon, code server, run tasks) share one role; the
# training entry point and the endpoint handler run in SageMaker under the execution role.
DAGSTER, SAGEMAKER_JOB = "dagster", "sagemaker-execution"
# Library classes and functions the deployment uses, per role: (module, names scanned in it).
LIBRARY_CODE = {
    DAGSTER: (
        ("dagster_aws.pipes.context_injectors", ("PipesS3ContextInjector",)),
        ("dagster_aws.pipes.message_readers", ("PipesS3MessageReader",)),
        ("dagster_aws.ecs.launcher", ("EcsRunLauncher",)),
        ("dagster_aws.ecs.tasks", ("get_current_ecs_task", "get_task_definition_dict_from_current_task")),
        ("dagster_aws.ecs.utils", ("run_ecs_task", "get_task_logs")),
        ("dagster_aws.s3.compute_log_manager", ("S3ComputeLogManager",)),
    ),
    SAGEMAKER_JOB: (
        ("dagster_pipes", ("PipesS3ContextLoader", "PipesS3MessageWriterChannel")),
    ),
}
# Calls no receiver shows: dagster_aws.ecs.tasks.get_task_kwargs_from_current_task reads the daemon task's
# network interfaces through the boto3 EC2 *resource* (ec2.NetworkInterface(...).groups).
IMPLICIT_CALLS = {DAGSTER: (("ec2", "DescribeNetworkInterfaces", "dagster_aws.ecs.tasks:get_task_kwargs_from_current_task"),)}


@dataclass(frozen=True, order=True)
class AwsCall:
    service: str          # botocore service name (s3, bedrock-runtime, ...)
    operation: str        # CamelCase API operation
    where: str            # file:line or library location
    role: str

    @property
    def iam_actions(self) -> tuple[str, ...]:
        return iam_actions(self.service, self.operation)


@lru_cache(maxsize=None)
def service_model(service: str):
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


@lru_cache(maxsize=None)
def operations(service: str) -> dict[str, str]:
    """snake_case method name -> CamelCase operation of one service."""
    from botocore import xform_name

    return {xform_name(name): name for name in service_model(service).operation_names}


@lru_cache(maxsize=None)
def waiter_operations(service: str) -> dict[str, str]:
    import botocore.session
    from botocore import xform_name
    from botocore.exceptions import UnknownServiceError

    try:
        model = botocore.session.get_session().get_waiter_model(service)
    except (UnknownServiceError, ValueError):
        return {}
    return {xform_name(name): model.get_waiter(name).operation for name in model.waiter_names}


def iam_prefix(service: str) -> str:
    return IAM_PREFIX.get(service) or service_model(service).signing_name


def iam_actions(service: str, operation: str) -> tuple[str, ...]:
    return IAM_ACTIONS.get((service, operation)) or (f"{iam_prefix(service)}:{operation}",)


# ------------------------------------------------------------------------------------------------ the scanner
CLIENT, NOT_CLIENT, UNKNOWN = "client", "not-client", "unknown"


@dataclass(frozen=True)
class Kind:
    what: str                 # CLIENT, NOT_CLIENT or UNKNOWN
    service: str | None = None


def _factory_service(call: ast.Call) -> str | None:
    """The service of ``boto3.client("s3")`` / ``make_client("bedrock", ...)`` / ``session.client(...)``."""
    name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", None)
    if name not in CLIENT_FACTORIES:
        return None
    args = list(call.args[:1]) + [k.value for k in call.keywords if k.arg in ("service", "service_name")]
    for arg in args:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
    return None


def _hint(name: str) -> str | None:
    name = name.strip("_")
    return RECEIVER_HINTS.get(name) or RECEIVER_HINTS.get(name.removesuffix("_client"))


def _receiver_name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


class _Module:
    """Name bindings of one module: what each name, self attribute and function gives back."""

    def __init__(self, tree: ast.Module):
        self.tree = tree
        self.imported: set[str] = set()
        self.module_names: dict[str, Kind] = {}
        self.functions: dict[str, Kind] = {}                       # module functions returning a client
        self.attrs: dict[str, dict[str, Kind]] = defaultdict(dict)  # class -> self.<attr> / property / method
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                self.imported.update((a.asname or a.name).split(".")[0] for a in node.names)
        for _ in range(2):   # a second pass sees attributes and functions defined below their first use
            self._bind()

    def _bind(self) -> None:
        for node in self.tree.body:
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        self.module_names[target.id] = self.kind(node.value, {}, None)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                _, returned = self.function_env(node, None)
                if returned.what == CLIENT:
                    self.functions[node.name] = returned
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        _, returned = self.function_env(item, node.name)
                        if returned.what == CLIENT:
                            self.attrs[node.name][item.name] = returned

    def parameters(self, function, cls: str | None) -> dict[str, Kind]:
        args = function.args
        every = [*args.posonlyargs, *args.args, *args.kwonlyargs]
        env = {}
        for number, arg in enumerate(every):
            if cls is not None and number == 0 and arg.arg in ("self", "cls"):
                env[arg.arg] = Kind(NOT_CLIENT)
                continue
            annotation = ast.unparse(arg.annotation) if arg.annotation is not None else ""
            if annotation and "Client" not in annotation and annotation.strip("'\"") not in ("Any", "object"):
                env[arg.arg] = Kind(NOT_CLIENT)   # typed as something else (OpenSearch, str, Path, ...)
            else:
                env[arg.arg] = Kind(UNKNOWN, _hint(arg.arg))
        return env

    def function_env(self, function, cls: str | None) -> tuple[dict[str, Kind], Kind]:
        """The function's local names (``self.<attr>`` assignments recorded on the class) and what it returns."""
        env = self.parameters(function, cls)
        returned = Kind(UNKNOWN)
        for node in _own_nodes(function):
            if isinstance(node, ast.Assign):
                value = self.kind(node.value, env, cls)
                for target in node.targets:
                    targets = target.elts if isinstance(target, ast.Tuple) else [target]
                    values = node.value.elts if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple) \
                        else [node.value] * len(targets)
                    for one, expr in zip(targets, values):
                        kind = self.kind(expr, env, cls) if len(targets) > 1 else value
                        if isinstance(one, ast.Name):
                            env[one.id] = kind
                        elif _is_self_attr(one) and cls is not None and kind.what != UNKNOWN and (
                                kind.what == CLIENT or one.attr not in self.attrs[cls]):
                            self.attrs[cls][one.attr] = kind
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                annotation = ast.unparse(node.annotation)  # `client: OpenSearch = ...` says what it holds
                env[node.target.id] = Kind(NOT_CLIENT) if "Client" not in annotation else (
                    self.kind(node.value, env, cls) if node.value is not None else Kind(UNKNOWN))
            elif isinstance(node, ast.Return) and node.value is not None:
                kind = self.kind(node.value, env, cls)
                if kind.what == CLIENT:
                    returned = kind
        return env, returned

    def kind(self, node: ast.expr, env: dict[str, Kind], cls: str | None) -> Kind:
        if isinstance(node, ast.Call):
            service = _factory_service(node)
            if service:
                return Kind(CLIENT, service)
            func = node.func
            if isinstance(func, ast.Name) and func.id in self.functions:
                return self.functions[func.id]
            if _is_self_attr(func) and cls is not None and func.attr in self.attrs[cls]:
                return self.attrs[cls][func.attr]
            root = func
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(func, ast.Attribute) and isinstance(root, ast.Name) and root.id in self.imported:
                return Kind(NOT_CLIENT)   # re.compile(...), json.loads(...): a library call that is no factory
            return Kind(UNKNOWN, _hint(_receiver_name(func)))
        if isinstance(node, ast.BoolOp):
            kinds = [self.kind(value, env, cls) for value in node.values]
            return next((k for k in kinds if k.what == CLIENT), Kind(UNKNOWN, next(
                (k.service for k in kinds if k.service), None)))
        if isinstance(node, ast.Name):
            if node.id in env:
                return env[node.id]
            if node.id in self.module_names:
                return self.module_names[node.id]
            if node.id in self.imported:
                return Kind(NOT_CLIENT)
            return Kind(UNKNOWN, _hint(node.id))
        if _is_self_attr(node) and cls is not None:
            return self.attrs[cls].get(node.attr) or Kind(UNKNOWN, _hint(node.attr))
        if isinstance(node, ast.Attribute):
            return Kind(UNKNOWN, _hint(node.attr))
        return Kind(NOT_CLIENT)   # literals, comprehensions, arithmetic


def _is_self_attr(node) -> bool:
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")


def _own_nodes(function):
    """Nodes of a function body in source order, nested functions and classes left out."""
    stack = list(reversed(function.body))
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        stack.extend(reversed(list(ast.iter_child_nodes(node))))


def _services_built(tree: ast.AST) -> set[str]:
    return {s for node in ast.walk(tree) if isinstance(node, ast.Call) and (s := _factory_service(node))}


def scan_source(source: str, where: str, role: str, only: tuple[str, ...] | None = None,
                services: tuple[str, ...] = ()) -> tuple[list[AwsCall], list[str]]:
    """AWS calls in one module (or only in its top-level ``only`` classes/functions), and the calls whose
    client could not be told apart (``"file:line: receiver.method: could be s3, logs"``)."""
    tree = ast.parse(source)
    module = _Module(tree)
    watched = tuple(dict.fromkeys((*WATCHED, *sorted(_services_built(tree)), *services)))
    found: list[AwsCall] = []
    unresolved: list[str] = []
    for top in tree.body:
        if only is not None and getattr(top, "name", None) not in only:
            continue
        if isinstance(top, ast.ClassDef):
            scopes = [(f, top.name) for f in top.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]
        else:
            scopes = [(top, None)]
        for scope, cls in scopes:
            env = module.function_env(scope, cls)[0] if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                else {}
            calls_by_func = {id(n.func): n for n in ast.walk(scope) if isinstance(n, ast.Call)}
            for node in ast.walk(scope):
                # References count as calls too: _create(sagemaker.create_model, ...) calls it later.
                if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                    calls, problem = _resolve(node, calls_by_func.get(id(node)), module, env, cls, watched)
                    found.extend(AwsCall(s, op, f"{where}:{node.lineno}", role) for s, op in calls)
                    if problem:
                        unresolved.append(f"{where}:{node.lineno}: {problem}")
    return found, unresolved


def _resolve(node: ast.Attribute, call: ast.Call | None, module: _Module, env, cls,
             watched) -> tuple[list[tuple[str, str]], str | None]:
    method = node.attr
    literal = call.args[0].value if call is not None and call.args and isinstance(call.args[0], ast.Constant) \
        else None
    if method in TRANSFER_HELPERS:
        lookup = lambda service: service == "s3" and TRANSFER_HELPERS[method]  # noqa: E731
    elif method == "get_paginator" and isinstance(literal, str):
        lookup = lambda service: operations(service).get(literal)  # noqa: E731
    elif method == "get_waiter" and isinstance(literal, str):
        lookup = lambda service: waiter_operations(service).get(literal)  # noqa: E731
    else:
        lookup = lambda service: operations(service).get(method)  # noqa: E731
    if not any(lookup(s) for s in watched):
        return [], None
    receiver = module.kind(node.value, env, cls)
    if receiver.what == NOT_CLIENT:
        return [], None
    if method in TRANSFER_HELPERS:
        return [("s3", op) for op in TRANSFER_HELPERS[method]], None
    candidates = [s for s in watched if lookup(s)]
    text = f"{ast.unparse(node.value)}.{method}"
    if receiver.what == CLIENT:
        if receiver.service in candidates or receiver.service not in watched:
            return ([(receiver.service, lookup(receiver.service))] if lookup(receiver.service) else []), None
        return [], f"{text}: {receiver.service} has no such operation"
    if not candidates:
        return [], None
    if receiver.service in candidates:
        return [(receiver.service, lookup(receiver.service))], None
    if len(candidates) == 1:
        return [(candidates[0], lookup(candidates[0]))], None
    return [], f"{text}: could be {', '.join(candidates)}"


def _role_of(path: Path) -> str:
    inside_sagemaker = (PACKAGE / "training", PACKAGE / "serving")   # training entry point, endpoint handler
    return SAGEMAKER_JOB if any(folder in path.parents for folder in inside_sagemaker) else DAGSTER


def scan_package(package: Path = PACKAGE) -> tuple[list[AwsCall], list[str]]:
    calls, unresolved = [], []
    built = tuple(sorted(set().union(*(_services_built(ast.parse(p.read_text())) for p in package.rglob("*.py")))))
    for path in sorted(package.rglob("*.py")):
        found, problems = scan_source(path.read_text(), str(path.relative_to(ROOT)), _role_of(path), services=built)
        calls += found
        unresolved += problems
    return calls, unresolved


def scan_libraries() -> tuple[list[AwsCall], list[str]]:
    calls, unresolved = [], []
    for role, entries in LIBRARY_CODE.items():
        for module_name, names in entries:
            source = Path(importlib.util.find_spec(module_name).origin).read_text()
            missing = set(names) - {getattr(top, "name", None) for top in ast.parse(source).body}
            assert not missing, f"{module_name} no longer defines {sorted(missing)}: update LIBRARY_CODE"
            found, problems = scan_source(source, module_name, role, only=names)
            calls += found
            unresolved += problems
        calls += [AwsCall(service, op, where, role) for service, op, where in IMPLICIT_CALLS.get(role, ())]
    return calls, unresolved


def all_calls() -> tuple[list[AwsCall], list[str]]:
    own, own_problems = scan_package()
    libraries, library_problems = scan_libraries()
    return own + libraries, own_problems + library_problems


def table(calls: list[AwsCall]) -> str:
    """One line per (role, operation): the IAM actions and where the calls are."""
    grouped: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for call in sorted(calls):
        grouped[(call.role, call.service, call.operation)].append(call.where)
    lines = [f"{'role':<20} {'service':<16} {'operation':<28} {'IAM actions':<40} where"]
    for (role, service, op), places in sorted(grouped.items()):
        shown = ", ".join(places[:3]) + (f" (+{len(places) - 3})" if len(places) > 3 else "")
        lines.append(f"{role:<20} {service:<16} {op:<28} {', '.join(iam_actions(service, op)):<40} {shown}")
    return "\n".join(lines)


def main() -> int:
    calls, unresolved = all_calls()
    print(table(calls))
    for problem in unresolved:
        print(f"UNRESOLVED {problem}", file=sys.stderr)
    return 1 if unresolved else 0


if __name__ == "__main__":
    raise SystemExit(main())
