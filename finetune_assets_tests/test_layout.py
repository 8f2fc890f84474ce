"""The dependency rules of docs/contributing.md, read from every module's imports."""
import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "finetune_assets"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at top level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules_under(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def offenders(folder: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path in modules_under(folder):
        bad = sorted(m for m in imported_modules(path) if any(m == f or m.startswith(f + ".") for f in forbidden))
        if bad:
            found[str(path.relative_to(PACKAGE))] = bad
    return found


@pytest.mark.parametrize("folder, forbidden", [
    ("core", ("dagster", "boto3", "botocore", "finetune_assets.stages", "finetune_assets.resources",
              "finetune_assets.clients")),
    ("clients", ("dagster", "finetune_assets.stages", "finetune_assets.resources")),
    ("training", ("dagster", "finetune_assets.stages", "finetune_assets.resources", "finetune_assets.clients")),
])
def test_layers_import_only_downwards(folder, forbidden):
    # dagster_pipes (the entry point's protocol library) is allowed: only the package "dagster" itself is not.
    assert offenders(folder, forbidden) == {}


def test_the_rule_catches_a_violation(tmp_path, monkeypatch):
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "bad.py").write_text("def f():\n    from dagster import asset\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path)
    assert offenders("core", ("dagster",)) == {"core/bad.py": ["dagster"]}


def test_every_asset_lives_in_a_module_named_after_it():
    from finetune_assets.definitions import all_assets

    for asset in all_assets:
        for key in asset.keys:
            name = key.to_user_string()
            module = asset.op.compute_fn.decorated_fn.__module__
            assert module.endswith(f".{name}"), f"asset {name} is defined in {module}"
            assert module.split(".")[2] == asset.group_names_by_key[key], f"{name}: folder is not its group"


def test_every_asset_config_is_in_the_run_config_registry():
    import inspect

    from finetune_assets.definitions import all_assets
    from finetune_assets.stages.run_config import config_classes

    with_config = {}
    for asset in all_assets:
        annotation = inspect.signature(asset.op.compute_fn.decorated_fn).parameters.get("config")
        if annotation is not None:
            with_config[asset.op.name] = annotation.annotation
    assert {op: cls.__name__ for op, cls in config_classes().items()} == \
        {op: getattr(cls, "__name__", cls) for op, cls in with_config.items()}
