"""No module imports from a layer above its own (issue "One home per concept"): every import
statement of the package, lazy ones inside functions included, read with ast."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "infer_opt"
# Bottom to top. Engines run models; plugins and compression edit what engines run; workloads
# drive engines; run/ measures, results/ analyses the files format/ defines; commands present.
RANK = {"core": 0, "format": 1, "engines": 2, "compression": 3, "plugins": 4, "workloads": 4,
        "run": 5, "results": 5, "tools": 6, "commands": 7, "cli": 8}


def upward_imports() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        layer = path.relative_to(SRC).parts[0].removesuffix(".py")
        if layer not in RANK:
            continue  # the package's __init__
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "infer_opt" and len(parts) > 1 and parts[1] in RANK \
                        and RANK[parts[1]] > RANK[layer]:
                    found.append(f"{path.relative_to(SRC)}:{node.lineno} ({layer}) -> {name}")
    return found


def test_no_module_imports_from_a_layer_above_it() -> None:
    assert upward_imports() == []


def test_the_engines_folder_holds_the_contract_the_loop_and_one_package_per_runtime() -> None:
    top = sorted(p.name for p in (SRC / "engines").iterdir() if p.name != "__pycache__")
    assert [p for p in top if p.endswith(".py")] == ["__init__.py", "base.py", "decode.py"]
    assert all((SRC / "engines" / d / "__init__.py").is_file() for d in top if "." not in d)


def test_plugins_never_branch_on_an_engine_name() -> None:
    for path in (SRC / "plugins").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "settings.engine ==" not in text and "engine != " not in text, path
