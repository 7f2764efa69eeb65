"""Suite files (TOML): which variants run which workloads, strictly validated.

    name = "quick"                 # optional, defaults to the file stem
    model = "smollm2-135m"
    device = "auto"                # auto | cpu | cuda
    threads = 2                    # torch intra-op threads, recorded in every row
    timeout_s = 600                # per cell
    reference = "baseline"         # variant the table divides by
    also_reference = ["kv-cache"]  # optional: more divisors, shown in the speedup-vs-fidelity part

    [[group]]                      # variants x batch_sizes, one workload shape
    workload = "static-batch"      # the kind of load (default)
    variants = ["baseline", "kv-cache"]
    batch_sizes = [1]
    prompt_tokens = 32
    new_tokens = 128
    repeats = 3
    warmup_runs = 1
    warmup_new_tokens = 0          # tokens per warm-up run; 0 = new_tokens
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from infer_opt.core.errors import UserError
from infer_opt.workloads.registry import WORKLOAD_KINDS

SUITE_KEYS = {"name", "description", "model", "device", "threads", "timeout_s", "reference",
              "also_reference", "group"}
# Keys every group has; each workload kind adds its own (StaticBatch.group_keys, ...).
GROUP_KEYS = {"name", "variants", "workload"}
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class Group:
    name: str
    variants: list[str]
    workloads: list[Any]


@dataclass
class Suite:
    name: str
    path: str
    model: str = "smollm2-135m"
    device: str = "auto"
    threads: int = 2
    timeout_s: float = 600.0
    reference: str = "baseline"
    also_reference: list[str] = field(default_factory=list)
    description: str = ""
    groups: list[Group] = field(default_factory=list)


def bench_dir() -> Path:
    """bench/ of the checkout (suites live there, beside the pytest-benchmark files)."""
    return Path(__file__).resolve().parents[3] / "bench"


def find_suite(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise UserError("suite", f"file {str(p)!r} not found")
        return p
    candidate = bench_dir() / f"{name_or_path}.toml"
    if candidate.is_file():
        return candidate
    known = sorted(x.stem for x in bench_dir().glob("*.toml")) if bench_dir().is_dir() else []
    raise UserError("suite", f"unknown suite {name_or_path!r}; known: {', '.join(known)} or a .toml path")


def _check_keys(where: str, table: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise UserError(where, f"unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")


def _typed(where: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UserError(where, f"must be {what}, got {value!r}")
    return value


def load_suite(name_or_path: str) -> Suite:
    path = find_suite(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"suite {path}", f"not valid TOML: {exc}") from None
    _check_keys(f"suite {path}", data, SUITE_KEYS)
    suite = Suite(name=str(data.get("name", path.stem)), path=str(path))
    suite.description = str(data.get("description", ""))
    suite.model = _typed(f"{path}: model", data.get("model", suite.model), str, "a string")
    suite.device = _typed(f"{path}: device", data.get("device", suite.device), str, "a string")
    if suite.device not in DEVICES:
        raise UserError(f"{path}: device", f"{suite.device!r} is not one of {', '.join(DEVICES)}")
    suite.threads = _typed(f"{path}: threads", data.get("threads", suite.threads), int, "an integer")
    if suite.threads <= 0:
        raise UserError(f"{path}: threads", f"must be > 0, got {suite.threads}")
    suite.timeout_s = float(_typed(f"{path}: timeout_s", data.get("timeout_s", suite.timeout_s),
                                   (int, float), "a number"))
    suite.reference = _typed(f"{path}: reference", data.get("reference", suite.reference), str,
                             "a variant name")
    also = data.get("also_reference", [])
    if not isinstance(also, list) or not all(isinstance(v, str) for v in also):
        raise UserError(f"{path}: also_reference",
                        f"expected a list of variant names, got {also!r}")
    suite.also_reference = also
    groups = data.get("group", [])
    if not isinstance(groups, list) or not groups:
        raise UserError(f"{path}: group", "at least one [[group]] table is required")
    for i, g in enumerate(groups):
        where = f"{path}: group[{i}]"
        kind = g.get("workload", "static-batch")
        if kind not in WORKLOAD_KINDS:
            raise UserError(f"{where}.workload",
                            f"unknown workload {kind!r}; known: {', '.join(sorted(WORKLOAD_KINDS))}")
        cls = WORKLOAD_KINDS[kind]
        _check_keys(where, g, GROUP_KEYS | set(cls.group_keys))
        variants = g.get("variants")
        if not isinstance(variants, list) or not variants or not all(isinstance(v, str) for v in variants):
            raise UserError(f"{where}.variants", "must be a non-empty list of variant strings")
        try:
            workloads = cls.from_group(g)
            for w in workloads:
                w.validate()
        except UserError as exc:
            raise UserError(f"{where}.{exc.field.removeprefix('workload.')}",
                            str(exc).split(": ", 1)[1]) from None
        suite.groups.append(Group(name=str(g.get("name", f"group{i}")), variants=variants,
                                  workloads=workloads))
    return suite
