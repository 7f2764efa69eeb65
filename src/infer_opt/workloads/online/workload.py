"""The `online` workload kind: N requests arriving over time, served by one batching policy.

A suite [[group]] with `workload = "online"` expands to one workload per policy x arrival rate
(or concurrency, with `arrival = "concurrency"`) x prefix_reuse value. Everything is checked
here, with one-line errors naming the key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar

from infer_opt.core import registry
from infer_opt.core.errors import UserError
from infer_opt.core.params import Param, check_all
from infer_opt.workloads.base import SAMPLING_PARAMS, Sampled, check_fields
from infer_opt.workloads.online.arrivals import ARRIVALS, LENGTHS

PROMPTS = ("text", "shared-prefix")


@dataclass(frozen=True)
class OnlineWorkload(Sampled):
    """Requests with seeded lengths and arrival times, served by `policy`; each timed run serves
    all of them again (the sampling rule of `Sampled` decides how many runs).

    prompt_tokens / new_tokens are the mean lengths (`lengths` = fixed or uniform within
    ±length_spread). With prompts = "shared-prefix" every prompt is `prefix_tokens` of a common
    system prompt followed by `prompt_tokens` of its own; prefix_reuse computes the prefix KV
    once and copies it into every request. SLOs in ms (0 = none): a request meets the SLO
    when its TTFT, TPOT and e2e are all within the given bounds.
    """

    policy: str = "continuous"
    num_requests: int = 16
    arrival: str = "poisson"
    arrival_rate_per_s: float = 1.0
    burstiness: float = 1.0
    # Closed-loop clients with arrival = "concurrency" (workloads/online/closed_loop.py); 0
    # otherwise, so the workload of an open-loop row is what it was before this field existed.
    concurrency: int = 0
    prompt_tokens: int = 32
    new_tokens: int = 32
    lengths: str = "fixed"
    length_spread: float = 0.5
    max_batch_size: int = 8
    max_wait_ms: float = 50.0
    prompts: str = "text"
    prefix_tokens: int = 0
    prefix_reuse: bool = False
    ttft_slo_ms: float = 0.0
    tpot_slo_ms: float = 0.0
    e2e_slo_ms: float = 0.0
    slo_target_pct: float = 90.0
    warmup_requests: int = 2
    kind: str = "online"
    # Batching policies drive the decode loop: rows join and leave between steps.
    needs_step_api: ClassVar[bool] = True
    # Padded rows that join and leave a running batch: kv / cache_from_kv (Engine.row_ops).
    needs_row_ops: ClassVar[bool] = True
    # Rows join and leave step by step (decode.prefill / decode): a decoder replacing whole
    # generation (speculative decoding) would not apply, so such stacks are refused here.
    uses_generate: ClassVar[bool] = False
    # Every field, declared once (core/params.py). `policy` is checked against the registered
    # policies in validate (they are entry points, known only at run time).
    params: ClassVar[tuple[Param, ...]] = (
        Param("policy", str, "continuous", "batching policy"),
        Param("num_requests", int, 16, "requests per timed run", minimum=1),
        Param("arrival", str, "poisson", "arrival process", choices=ARRIVALS),
        Param("arrival_rate_per_s", float, 1.0, "mean arrivals per second", greater_than=0.0),
        Param("burstiness", float, 1.0, "gamma shape (1 = Poisson)", greater_than=0.0),
        Param("concurrency", int, 0, "closed-loop clients (arrival = \"concurrency\")",
              minimum=0),
        Param("prompt_tokens", int, 32, "mean prompt length", minimum=1),
        Param("new_tokens", int, 32, "mean tokens generated", minimum=1),
        Param("lengths", str, "fixed", "fixed or uniform lengths", choices=LENGTHS),
        Param("length_spread", float, 0.5, "uniform lengths: +- this fraction", minimum=0.0,
              maximum=0.99),
        Param("max_batch_size", int, 8, "most requests served at once", minimum=1),
        Param("max_wait_ms", float, 50.0, "dynamic batching: longest wait", minimum=0.0),
        Param("prompts", str, "text", "prompt kind", choices=PROMPTS),
        Param("prefix_tokens", int, 0, "shared-prefix prompts: prefix length", minimum=0),
        Param("prefix_reuse", bool, False, "copy the prefix KV into each request"),
        Param("ttft_slo_ms", float, 0.0, "TTFT SLO (0 = none)", minimum=0.0),
        Param("tpot_slo_ms", float, 0.0, "TPOT SLO (0 = none)", minimum=0.0),
        Param("e2e_slo_ms", float, 0.0, "e2e SLO (0 = none)", minimum=0.0),
        Param("slo_target_pct", float, 90.0, "share of requests that must meet the SLO",
              minimum=0.0, maximum=100.0),
        Param("warmup_requests", int, 2, "untimed requests first", minimum=0),
        *SAMPLING_PARAMS,
    )
    # Suite keys that expand into one workload per value (a list), and the field each sets.
    EXPANDED: ClassVar[dict[str, str]] = {"policies": "policy", "arrival_rates":
                                          "arrival_rate_per_s", "concurrencies": "concurrency",
                                          "prefix_reuse": "prefix_reuse"}

    @classmethod
    def group_params(cls) -> tuple[Param, ...]:
        """Keys a suite [[group]] may set: policies, arrival_rates (or concurrencies) and
        prefix_reuse are lists (one workload per combination); the other fields are set once."""
        by = {p.name: p for p in cls.params}
        policy = replace(by["policy"], name="policies",
                         choices=tuple(registry.names("policy")))
        return (Param("policies", list, ["sequential", "dynamic", "continuous"],
                      "one workload per policy", item=policy),
                Param("arrival_rates", list, [1.0], "one workload per rate",
                      item=replace(by["arrival_rate_per_s"], name="arrival_rates")),
                Param("concurrencies", list, [1], "arrival = \"concurrency\": one workload "
                      "per number of closed-loop clients",
                      item=replace(by["concurrency"], name="concurrencies", minimum=1)),
                Param("prefix_reuse", list, [False], "true, false or both",
                      item=by["prefix_reuse"]),
                *(p for p in cls.params if p.name not in cls.EXPANDED.values()))

    # --- checks --------------------------------------------------------------------------
    def validate(self, max_context: int | None = None) -> None:
        check_fields(self, self.params)
        self.validate_sampling()
        policies = tuple(registry.names("policy"))
        if self.policy not in policies:
            raise UserError("workload", f"policy must be one of {', '.join(policies)}; "
                                        f"got {self.policy!r}")
        if self.arrival == "concurrency" and self.concurrency < 1:
            raise UserError("workload.concurrency", "must be >= 1 with arrival = \"concurrency\""
                                                    f", got {self.concurrency}")
        if self.arrival != "concurrency" and self.concurrency:
            raise UserError("workload.concurrency", "needs arrival = \"concurrency\" (got "
                                                    f"arrival = {self.arrival!r})")
        if self.prompts == "shared-prefix" and self.prefix_tokens < 1:
            raise UserError("workload.prefix_tokens",
                            "must be >= 1 with prompts = \"shared-prefix\"")
        if self.prompts != "shared-prefix" and (self.prefix_tokens or self.prefix_reuse):
            raise UserError("workload.prefix_tokens",
                            "prefix_tokens and prefix_reuse need prompts = \"shared-prefix\"")
        if max_context is not None:
            top = self.prefix_tokens + self.prompt_tokens + self.new_tokens
            if self.lengths == "uniform":
                spread = 1 + self.length_spread
                top = self.prefix_tokens + round((self.prompt_tokens + self.new_tokens) * spread)
            if top > max_context:
                raise UserError("workload.prompt_tokens",
                                f"longest request ({top} tokens) exceeds the model's context of "
                                f"{max_context} tokens")

    @property
    def batch_cap(self) -> int:
        """Most requests served at once (1 for sequential serving)."""
        return 1 if self.policy == "sequential" else self.max_batch_size

    def slos_ms(self) -> dict[str, float]:
        """The SLOs that are set: {'ttft_ms': 1000.0, ...}."""
        slos = {"ttft_ms": self.ttft_slo_ms, "tpot_ms": self.tpot_slo_ms, "e2e_ms": self.e2e_slo_ms}
        return {k: float(v) for k, v in slos.items() if v > 0}

    # --- plain data ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OnlineWorkload:
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - allowed)
        if unknown:
            raise UserError("workload",
                            f"unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
        return cls(**d)

    @classmethod
    def from_group(cls, group: dict[str, Any]) -> list[OnlineWorkload]:
        """One workload per policy x arrival rate (or concurrency) x prefix_reuse value (keys
        already checked). `concurrencies` goes with arrival = "concurrency" only, and
        `arrival_rates` never does (a closed loop has no rate): either mix is refused, since a
        key that silently does nothing is a typo the user would not see."""
        given = dict(group)
        reuse = given.get("prefix_reuse", [False])
        if isinstance(reuse, bool):
            given["prefix_reuse"] = [reuse]
        elif not isinstance(reuse, list):
            raise UserError("workload", f"prefix_reuse must be true, false or a list of them, "
                                        f"got {reuse!r}")
        values = check_all(cls.group_params(), given, "workload", what="key")
        closed = values["arrival"] == "concurrency"
        if "concurrencies" in given and not closed:
            raise UserError("workload.concurrencies", "needs arrival = \"concurrency\" (got "
                                                      f"arrival = {values['arrival']!r})")
        if closed and "arrival_rates" in given:
            raise UserError("workload.arrival_rates", "has no meaning with arrival = "
                                                      "\"concurrency\" (closed-loop clients send "
                                                      "when served); use concurrencies")
        rates = values["arrival_rates"]
        if values["arrival"] == "offline":
            rates = rates[:1]  # arrival rate means nothing when everything arrives at t = 0
        # One load per rate, or per concurrency (the rate field keeps its default there).
        loads = ([{"concurrency": n} for n in values["concurrencies"]] if closed else
                 [{"arrival_rate_per_s": float(r)} for r in rates])
        scalar = {k: v for k, v in values.items() if k not in cls.EXPANDED}
        return [cls(policy=p, prefix_reuse=x, **load, **scalar)
                for p in values["policies"] for load in loads for x in values["prefix_reuse"]]

    def session(self, ctx: Any) -> Any:
        from infer_opt.workloads.online.measure import OnlineSession

        return OnlineSession(self, ctx)

    def skip_reason(self, settings: Any) -> str | None:
        if self.prefix_reuse and settings.kv_cache == "none":
            return ("prefix reuse copies the prefix's KV cache into each request; this variant "
                    "has none (add kv-cache)")
        return None

    def row_columns(self) -> dict[str, Any]:
        from infer_opt.workloads.online.measure import online_row_columns

        return online_row_columns(self)
