"""What load a cell serves. Workloads describe the requests; any backend serves them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Protocol

from infer_opt.core.errors import UserError


class Workload(Protocol):
    """A kind of load. `kind` names it in suites, cells and rows; `measure` serves it on a
    loaded backend and fills the row and samples. Registered in WORKLOAD_KINDS."""

    kind: str

    def validate(self, max_context: int | None = None) -> None: ...
    def to_dict(self) -> dict[str, Any]: ...
    def measure(self, ctx: Any, row: dict[str, Any], samples: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class StaticBatch:
    """`batch_size` prompts of exactly `prompt_tokens` tokens, each extended by exactly
    `new_tokens` greedy tokens (no early stop at EOS, so every variant does the same work).

    The batch is timed `repeats` times after `warmup_runs` untimed runs. A warm-up run generates
    `warmup_new_tokens` tokens (0 = as many as a timed run): the cache-less baseline pays
    seconds per token, and its kernels are warm after a few steps.
    """

    batch_size: int = 1
    prompt_tokens: int = 128
    new_tokens: int = 128
    repeats: int = 3
    warmup_runs: int = 1
    warmup_new_tokens: int = 0
    kind: str = "static-batch"
    # Keys a suite [[group]] may set for this workload (batch_sizes expands to one per size).
    group_keys: ClassVar[tuple[str, ...]] = ("batch_sizes", "prompt_tokens", "new_tokens",
                                             "repeats", "warmup_runs", "warmup_new_tokens")

    def validate(self, max_context: int | None = None) -> None:
        for name in ("batch_size", "prompt_tokens", "new_tokens", "repeats"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise UserError(f"workload.{name}", f"must be an integer > 0, got {value!r}")
        if not isinstance(self.warmup_runs, int) or self.warmup_runs < 0:
            raise UserError("workload.warmup_runs", f"must be an integer >= 0, got {self.warmup_runs!r}")
        if not isinstance(self.warmup_new_tokens, int) or self.warmup_new_tokens < 0:
            raise UserError("workload.warmup_new_tokens",
                            f"must be an integer >= 0, got {self.warmup_new_tokens!r}")
        if max_context is not None and self.prompt_tokens + self.new_tokens > max_context:
            raise UserError(
                "workload.prompt_tokens",
                f"prompt_tokens + new_tokens = {self.prompt_tokens + self.new_tokens} exceeds the "
                f"model's context of {max_context} tokens",
            )

    @property
    def warmup_tokens(self) -> int:
        return min(self.warmup_new_tokens or self.new_tokens, self.new_tokens)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StaticBatch:
        allowed = {f.name for f in fields(cls)}
        unknown = set(d) - allowed
        if unknown:
            raise UserError(
                "workload", f"unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}"
            )
        return cls(**d)

    @classmethod
    def from_group(cls, group: dict[str, Any]) -> list[StaticBatch]:
        """One workload per batch size of a suite group (keys already checked)."""
        sizes = group.get("batch_sizes", [1])
        if not isinstance(sizes, list) or not sizes:
            raise UserError("batch_sizes", "must be a non-empty list of integers > 0")
        return [cls(batch_size=bs,
                     prompt_tokens=group.get("prompt_tokens", 128),
                     new_tokens=group.get("new_tokens", 128),
                     repeats=group.get("repeats", 3),
                     warmup_runs=group.get("warmup_runs", 1),
                     warmup_new_tokens=group.get("warmup_new_tokens", 0)) for bs in sizes]

    def measure(self, ctx: Any, row: dict[str, Any], samples: dict[str, Any]) -> None:
        from infer_opt.workloads.static_batch import measure_static_batch

        measure_static_batch(self, ctx, row, samples)


# kind -> workload class. Other kinds (online serving, ...) add themselves here.
WORKLOAD_KINDS: dict[str, Any] = {"static-batch": StaticBatch}


def workload_from_dict(d: dict[str, Any]) -> Any:
    kind = d.get("kind", "static-batch")
    if kind not in WORKLOAD_KINDS:
        raise UserError("workload", f"unknown kind {kind!r}; known: {', '.join(sorted(WORKLOAD_KINDS))}")
    return WORKLOAD_KINDS[kind].from_dict(d)


def _register_online() -> None:
    from infer_opt.workloads.online.workload import OnlineWorkload

    WORKLOAD_KINDS["online"] = OnlineWorkload


_register_online()
