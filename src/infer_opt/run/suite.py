"""Suite files (TOML): which variants run which workloads, strictly validated.

    name = "quick"                 # optional, defaults to the file stem; letters, digits, . _ -
    model = "smollm2-135m"
    device = "auto"                # auto | cpu | cuda
    threads = 2                    # torch intra-op threads, recorded in every row
    timeout_s = 600                # per request to a worker (load, warm-up, one timed run)
    max_workers = 6                # variants of a group loaded side by side (interleaved)
    seed = 0                       # prompts and the order of interleaved rounds
    reference = "baseline"         # variant the table divides by
    also_reference = ["kv-cache"]  # optional: more divisors, shown in the speedup-vs-fidelity part

    [[group]]                      # variants x batch_sizes, one workload shape
    workload = "static-batch"      # the kind of load (default)
    variants = ["baseline", "kv-cache"]
    batch_sizes = [1]
    prompt_tokens = 32
    new_tokens = 128
    min_repeats = 5                # timed runs: see workloads/base.Sampled
    warmup_runs = 1
    warmup_new_tokens = 0          # tokens per warm-up run; 0 = new_tokens

Named suites ship inside the package (infer_opt/suites/*.toml, also linked from the checkout's
bench/), so an installed wheel runs `infer-opt run --suite default`; any other suite is a path.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import tomllib

from infer_opt.core import registry
from infer_opt.core.errors import UserError

SUITE_KEYS = {"name", "description", "model", "device", "threads", "timeout_s", "reference",
              "also_reference", "max_workers", "seed", "group"}
# Keys every group has; each workload kind adds its own (StaticBatch.group_keys, ...).
GROUP_KEYS = {"name", "variants", "workload"}
DEVICES = ("auto", "cpu", "cuda")
# A suite name becomes part of file names (results/<stamp>-<name>-<id>.csv).
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


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
    max_workers: int = 6
    seed: int = 0
    reference: str = "baseline"
    also_reference: list[str] = field(default_factory=list)
    description: str = ""
    groups: list[Group] = field(default_factory=list)

    @property
    def cell_count(self) -> int:
        return sum(len(g.variants) * len(g.workloads) for g in self.groups)


def named_suites() -> dict[str, Any]:
    """Suites shipped with the package: name -> resource (a Traversable .toml file)."""
    root = files("infer_opt") / "suites"
    return {f.name.removesuffix(".toml"): f for f in root.iterdir() if f.name.endswith(".toml")}


def _suite_text(name_or_path: str) -> tuple[str, bytes]:
    """(where, raw bytes) of a named suite or a .toml path."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists() or "/" in name_or_path:
        if not p.is_file():
            raise UserError("suite", f"file {str(p)!r} not found")
        return str(p), p.read_bytes()
    suites = named_suites()
    if name_or_path not in suites:
        raise UserError("suite", f"unknown suite {name_or_path!r}; known: "
                                 f"{', '.join(sorted(suites))} or a .toml path")
    return f"suite {name_or_path}", suites[name_or_path].read_bytes()


def _check_keys(where: str, table: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise UserError(where, f"unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")


def _typed(where: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UserError(where, f"must be {what}, got {value!r}")
    return value


def load_suite(name_or_path: str) -> Suite:
    where, raw = _suite_text(name_or_path)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(where, "not a text file (a suite is UTF-8 TOML)") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(where, f"not valid TOML: {exc}") from None
    _check_keys(where, data, SUITE_KEYS)
    # A file's stem is made safe; a name the suite sets must already be.
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name_or_path).stem).strip("-.") or "suite"
    name = data.get("name", stem[:64])
    if not isinstance(name, str) or not SAFE_NAME.match(name):
        raise UserError(f"{where}: name", f"{name!r} must be 1-64 letters, digits, '.', '_' or "
                                          "'-' (it becomes part of result file names)")
    suite = Suite(name=name, path=where)
    suite.description = str(data.get("description", ""))
    suite.model = _typed(f"{where}: model", data.get("model", suite.model), str, "a string")
    suite.device = _typed(f"{where}: device", data.get("device", suite.device), str, "a string")
    if suite.device not in DEVICES:
        raise UserError(f"{where}: device", f"{suite.device!r} is not one of {', '.join(DEVICES)}")
    suite.threads = _typed(f"{where}: threads", data.get("threads", suite.threads), int,
                           "an integer")
    if suite.threads <= 0:
        raise UserError(f"{where}: threads", f"must be > 0, got {suite.threads}")
    suite.timeout_s = float(_typed(f"{where}: timeout_s", data.get("timeout_s", suite.timeout_s),
                                   (int, float), "a number"))
    if not math.isfinite(suite.timeout_s) or suite.timeout_s <= 0:
        raise UserError(f"{where}: timeout_s", f"must be a number > 0, got {suite.timeout_s!r}")
    for key in ("max_workers", "seed"):
        value = _typed(f"{where}: {key}", data.get(key, getattr(suite, key)), int, "an integer")
        if value < (1 if key == "max_workers" else 0):
            raise UserError(f"{where}: {key}", f"must be >= {1 if key == 'max_workers' else 0}, "
                                               f"got {value}")
        setattr(suite, key, value)
    suite.reference = _typed(f"{where}: reference", data.get("reference", suite.reference), str,
                             "a variant name")
    also = data.get("also_reference", [])
    if not isinstance(also, list) or not all(isinstance(v, str) for v in also):
        raise UserError(f"{where}: also_reference",
                        f"expected a list of variant names, got {also!r}")
    suite.also_reference = also
    groups = data.get("group", [])
    if not isinstance(groups, list) or not groups:
        raise UserError(f"{where}: group", "at least one [[group]] table is required")
    kinds = registry.names("workload")
    for i, g in enumerate(groups):
        gwhere = f"{where}: group[{i}]"
        kind = g.get("workload", "static-batch")
        if kind not in kinds:
            raise UserError(f"{gwhere}.workload",
                            f"unknown workload {kind!r}; known: {', '.join(kinds)}")
        cls = registry.load("workload", kind)
        _check_keys(gwhere, g, GROUP_KEYS | set(cls.group_keys))
        variants = g.get("variants")
        if not isinstance(variants, list) or not variants or not all(
                isinstance(v, str) for v in variants):
            raise UserError(f"{gwhere}.variants", "must be a non-empty list of variant strings")
        try:
            workloads = cls.from_group(g)
            for w in workloads:
                w.validate()
        except UserError as exc:
            raise UserError(f"{gwhere}.{exc.field.removeprefix('workload.')}",
                            str(exc).split(": ", 1)[1]) from None
        suite.groups.append(Group(name=str(g.get("name", f"group{i}")), variants=variants,
                                  workloads=workloads))
    return suite
