"""The `online` workload kind: N requests arriving over time, served by one batching policy.

A suite [[group]] with `workload = "online"` expands to one workload per policy x arrival rate
x prefix_reuse value. Everything is checked here, with one-line errors naming the key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from infer_opt.core import registry
from infer_opt.core.errors import UserError
from infer_opt.workloads.base import Sampled
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
    group_keys: ClassVar[tuple[str, ...]] = (
        "policies", "num_requests", "arrival", "arrival_rates", "burstiness", "prompt_tokens",
        "new_tokens", "lengths", "length_spread", "max_batch_size", "max_wait_ms", "prompts",
        "prefix_tokens", "prefix_reuse", "ttft_slo_ms", "tpot_slo_ms", "e2e_slo_ms",
        "slo_target_pct", "warmup_requests", *Sampled.sampling_keys)

    # --- checks --------------------------------------------------------------------------
    def validate(self, max_context: int | None = None) -> None:
        def integer(name: str, minimum: int) -> None:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
                raise UserError(f"workload.{name}", f"must be an integer >= {minimum}, got {v!r}")

        def number(name: str, minimum: float, strict: bool = False) -> None:
            v = getattr(self, name)
            bad = not isinstance(v, (int, float)) or isinstance(v, bool)
            if bad or v < minimum or (strict and v <= minimum):
                op = ">" if strict else ">="
                raise UserError(f"workload.{name}", f"must be a number {op} {minimum}, got {v!r}")

        def choice(name: str, allowed: tuple[str, ...]) -> None:
            v = getattr(self, name)
            if v not in allowed:
                raise UserError(f"workload.{name}", f"{v!r} is not one of {', '.join(allowed)}")

        self.validate_sampling()
        choice("policy", tuple(registry.names("policy")))
        choice("arrival", ARRIVALS)
        choice("lengths", LENGTHS)
        choice("prompts", PROMPTS)
        for name in ("num_requests", "prompt_tokens", "new_tokens", "max_batch_size"):
            integer(name, 1)
        integer("prefix_tokens", 0)
        integer("warmup_requests", 0)
        number("arrival_rate_per_s", 0.0, strict=True)
        number("burstiness", 0.0, strict=True)
        number("max_wait_ms", 0.0)
        for name in ("ttft_slo_ms", "tpot_slo_ms", "e2e_slo_ms"):
            number(name, 0.0)
        number("slo_target_pct", 0.0)
        if self.slo_target_pct > 100:
            raise UserError("workload.slo_target_pct",
                            f"must be <= 100, got {self.slo_target_pct!r}")
        if not isinstance(self.length_spread, (int, float)) or not 0 <= self.length_spread < 1:
            raise UserError("workload.length_spread",
                            f"must be a number in [0, 1), got {self.length_spread!r}")
        if not isinstance(self.prefix_reuse, bool):
            raise UserError("workload.prefix_reuse",
                            f"must be true or false, got {self.prefix_reuse!r}")
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
        """One workload per policy x arrival rate x prefix_reuse value (keys already checked)."""
        known = registry.names("policy")
        policies = group.get("policies", ["sequential", "dynamic", "continuous"])
        if not isinstance(policies, list) or not policies or not all(
                isinstance(p, str) for p in policies):
            raise UserError("policies", f"must be a non-empty list of: {', '.join(known)}")
        for p in policies:
            if p not in known:
                raise UserError("policies", f"{p!r} is not one of {', '.join(known)}")
        arrival = group.get("arrival", "poisson")
        rates = group.get("arrival_rates", [1.0])
        if not isinstance(rates, list) or not rates or not all(
                isinstance(r, (int, float)) and not isinstance(r, bool) and r > 0 for r in rates):
            raise UserError("arrival_rates",
                            f"must be a non-empty list of numbers > 0, got {rates!r}")
        if arrival == "offline":
            rates = rates[:1]  # arrival rate means nothing when everything arrives at t = 0
        reuse = group.get("prefix_reuse", False)
        reuses = reuse if isinstance(reuse, list) else [reuse]
        if not reuses or not all(isinstance(x, bool) for x in reuses):
            raise UserError("prefix_reuse", f"must be true, false or a list of them, got {reuse!r}")
        scalar = {k: group[k] for k in cls.group_keys
                  if k in group and k not in ("policies", "arrival_rates", "prefix_reuse")}
        return [cls(policy=p, arrival_rate_per_s=float(r), prefix_reuse=x, **scalar)
                for p in policies for r in rates for x in reuses]

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
