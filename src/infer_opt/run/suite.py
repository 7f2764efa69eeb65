"""Suite files (TOML): which variants run which workloads, strictly validated.

    name = "quick"                 # optional, defaults to the file stem; letters, digits, . _ -
    model = "smollm2-135m"
    device = "auto"                # auto | cpu | cuda
    threads = 2                    # torch intra-op threads, recorded in every row
    timeout_s = 600                # per request to a worker (load, warm-up, one timed run)
    max_workers = 6                # variants of a group loaded side by side (interleaved)
    seed = 0                       # prompts and the order of interleaved rounds
    reference = "baseline"         # variant the table divides by (must be one of the suite's)
    also_reference = ["kv-cache"]  # optional: more divisors, shown in the speedup-vs-fidelity part
    endpoint = "http://host:8000/v1"  # optional: the server of every served[server=endpoint]
    served_model = "NAME"          #   variant (a variant's own endpoint / model_name /
    api_key_env = "VAR"            #   api_key_env win); the key's value is never written

    [[group]]                      # variants x batch_sizes, one workload shape
    workload = "static-batch"      # the kind of load (default)
    variants = ["baseline", "kv-cache"]
    batch_sizes = [1]
    prompt_tokens = 32
    new_tokens = 128
    min_repeats = 5                # timed runs: see workloads/base.Sampled
    warmup_runs = 1
    warmup_new_tokens = 0          # tokens per warm-up run; 0 = new_tokens

Every key is declared as a core/params.Param (HEADER here, each workload's group_params()).
Values above workloads/base.CEILINGS (a cell that may never end) need
`allow_long_cells = true`.

Named suites ship inside the package (infer_opt/suites/*.toml, also linked from the checkout's
bench/), so an installed wheel runs `infer-opt run --suite default`; any other suite is a path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import tomllib

from infer_opt.core import registry
from infer_opt.core.errors import UserError
from infer_opt.core.params import Param, check_all
from infer_opt.core.stack import split_variant
from infer_opt.workloads.base import check_ceilings

# The suite header, declared like plugin parameters (core/params.py): one-line errors naming
# the field and what is allowed. `group` is the list of [[group]] tables (checked below).
HEADER: tuple[Param, ...] = (
    Param("name", str, "", "1-64 letters, digits, '.', '_' or '-' (default: the file stem)"),
    Param("description", str, "", "one line for `infer-opt suites`"),
    Param("model", str, "smollm2-135m", "built-in model, local directory or hub id"),
    Param("device", str, "auto", "where the cells run", choices=("auto", "cpu", "cuda")),
    Param("threads", int, 2, "torch intra-op threads", greater_than=0),
    Param("timeout_s", float, 600.0, "per request to a worker", greater_than=0.0),
    Param("max_workers", int, 6, "variants of a group loaded side by side", minimum=1),
    Param("seed", int, 0, "prompts and the order of interleaved rounds", minimum=0),
    Param("reference", str, "baseline", "variant the table divides by"),
    Param("also_reference", list, [], "more divisors",
          item=Param("also_reference", str, "", "a variant of the suite")),
    Param("allow_long_cells", bool, False, "accept values above the cell ceilings "
          "(workloads/base.CEILINGS)"),
    Param("endpoint", str, "", "base URL of the server of every served[server=endpoint] "
          "variant"),
    Param("served_model", str, "", "model name those variants send"),
    Param("api_key_env", str, "", "environment variable holding their API key"),
)
# Header keys that are the defaults of served[server=endpoint] variants -> the engine option
# each sets (engines/http/engine.py ServedEngine.suite_options decides who takes them).
SERVED_DEFAULTS = {"endpoint": "endpoint", "served_model": "model_name",
                   "api_key_env": "api_key_env"}
SUITE_KEYS = {p.name for p in HEADER} | {"group"}
# Keys every group has; each workload kind adds its own (its group_params()).
GROUP_KEYS = {"name", "variants", "workload"}
DEVICES = ("auto", "cpu", "cuda")
# A suite name becomes part of file names (results/<stamp>-<name>-<id>.csv).
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# A longer per-request timeout than a day is a hang that never ends (see CEILINGS).
TIMEOUT_CEILING_S = 86400.0


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
    allow_long_cells: bool = False
    endpoint: str = ""
    served_model: str = ""
    api_key_env: str = ""
    groups: list[Group] = field(default_factory=list)

    @property
    def engine_defaults(self) -> dict[str, str]:
        """Engine options the header gives as defaults (SERVED_DEFAULTS), those set only."""
        return {option: getattr(self, key) for key, option in SERVED_DEFAULTS.items()
                if getattr(self, key)}

    @property
    def cell_count(self) -> int:
        return sum(len(g.variants) * len(g.workloads) for g in self.groups)


def named_suites() -> dict[str, Any]:
    """Suites shipped with the package: name -> resource (a Traversable .toml file)."""
    root = files("infer_opt") / "suites"
    return {f.name.removesuffix(".toml"): f for f in root.iterdir() if f.name.endswith(".toml")}


def suite_text(name_or_path: str) -> tuple[str, bytes]:
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


def _check_served_defaults(where: str, header: dict[str, Any]) -> None:
    from infer_opt.engines.http.endpoint import endpoint_problem, env_name_problem

    why = header["endpoint"] and endpoint_problem(header["endpoint"])
    if why:
        raise UserError(f"{where}: endpoint", why)
    why = header["api_key_env"] and env_name_problem(header["api_key_env"])
    if why:
        raise UserError(f"{where}: api_key_env", why)


def load_suite(name_or_path: str, allow_long_cells: bool = False) -> Suite:
    """The suite, every field checked (one line, exit 2, on the first problem): the header and
    each group's keys against their Params, variant strings parsed, no variant twice in a
    group, references naming variants of the suite, values above the cell ceilings refused
    unless `allow_long_cells` (the suite's key or the command line's flag)."""
    where, raw = suite_text(name_or_path)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(where, "not a text file (a suite is UTF-8 TOML)") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(where, f"not valid TOML: {exc}") from None
    _check_keys(where, data, SUITE_KEYS)
    header = check_all(HEADER, {k: v for k, v in data.items() if k != "group"}, where,
                       what="key")
    # A file's stem is made safe; a name the suite sets must already be.
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name_or_path).stem).strip("-.") or "suite"
    name = header["name"] or stem[:64]
    if not SAFE_NAME.match(name):
        raise UserError(f"{where}: name", f"{name!r} must be 1-64 letters, digits, '.', '_' or "
                                          "'-' (it becomes part of result file names)")
    header["name"] = name
    _check_served_defaults(where, header)
    suite = Suite(path=where, **header)
    long_ok = suite.allow_long_cells or allow_long_cells
    if suite.timeout_s > TIMEOUT_CEILING_S and not long_ok:
        raise UserError(f"{where}: timeout_s", f"{suite.timeout_s:g} s is above the ceiling of "
                                               f"{TIMEOUT_CEILING_S:g} s; set allow_long_cells = "
                                               "true (or pass --allow-long-cells) if you mean it")
    groups = data.get("group", [])
    if not isinstance(groups, list) or not groups:
        raise UserError(f"{where}: group", "at least one [[group]] table is required")
    kinds = registry.names("workload")
    for i, g in enumerate(groups):
        gwhere = f"{where}: group[{i}]"
        if not isinstance(g, dict):
            raise UserError(gwhere, f"must be a [[group]] table, got {g!r}"[:200])
        kind = g.get("workload", "static-batch")
        if kind not in kinds:
            raise UserError(f"{gwhere}.workload",
                            f"unknown workload {kind!r}; known: {', '.join(kinds)}")
        cls = registry.load("workload", kind)
        _check_keys(gwhere, g, GROUP_KEYS | {p.name for p in cls.group_params()})
        gname = g.get("name", f"group{i}")
        if not isinstance(gname, str) or not gname.strip():
            raise UserError(f"{gwhere}.name", f"must be a non-empty string, got {gname!r}")
        variants = g.get("variants")
        if not isinstance(variants, list) or not variants or not all(
                isinstance(v, str) for v in variants):
            raise UserError(f"{gwhere}.variants", "must be a non-empty list of variant strings")
        for v in variants:
            split_variant(v)  # the grammar now; registered names when stacks are built
            if variants.count(v) > 1:
                raise UserError(f"{gwhere}.variants", f"{v!r} is listed twice")
        try:
            workloads = cls.from_group({k: v for k, v in g.items() if k not in GROUP_KEYS})
            for w in workloads:
                w.validate()
                if not long_ok:
                    check_ceilings(w)
        except UserError as exc:
            field_ = exc.field.removeprefix("workload").lstrip(".")
            rest = str(exc).split(": ", 1)[1]
            raise UserError(f"{gwhere}.{field_}" if field_ else gwhere, rest) from None
        if gname in (grp.name for grp in suite.groups):
            raise UserError(f"{gwhere}.name", f"{gname!r} names two groups")
        suite.groups.append(Group(name=gname, variants=variants, workloads=workloads))
    every = {v for grp in suite.groups for v in grp.variants}
    for key, refs in (("reference", [suite.reference] if "reference" in data else []),
                      ("also_reference", suite.also_reference)):
        for ref in refs:
            if ref not in every:
                raise UserError(f"{where}: {key}", f"{ref!r} is not a variant of the suite; "
                                                   f"its variants: {', '.join(sorted(every))}")
    return suite
