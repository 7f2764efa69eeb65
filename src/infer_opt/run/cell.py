"""One cell: a variant serving one workload, as plain data (it crosses process and machine
boundaries), and the identity columns of its row. Cells are measured by a variant's worker
process (run/worker.py), in interleaved rounds with the group's other variants (run/rounds.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from infer_opt.format.columns import empty_row


@dataclass
class Cell:
    run_id: str
    suite: str
    index: int
    model: dict[str, Any]  # ModelRef as a dict
    variant: str
    workload: dict[str, Any]
    device: str
    threads: int
    bandwidth_gb_per_s: float
    seed: int = 0
    group: str = ""
    # Which job (run/plan.plan_jobs: a group, or a chunk of max_workers of its variants) times
    # this cell: round indices restart in every job, so two rows pair up round by round only
    # when their jobs are equal (kept in the samples as "job").
    job: int = 0
    # Metric columns declared by the run's plugins and engines (schema.run_columns).
    metric_columns: list[str] = field(default_factory=list)
    # Engine options the suite's header gives as defaults (run/suite.Suite.engine_defaults):
    # every process that builds the variant's stack builds the same one.
    engine_defaults: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def label(self) -> str:
        w = self.workload
        if w.get("kind") == "online":
            rate = "" if w.get("arrival") == "offline" else f" rate={w.get('arrival_rate_per_s')}/s"
            if w.get("arrival") == "concurrency":
                rate = f" clients={w.get('concurrency')}"
            return (f"{self.variant} online {w.get('policy')} {w.get('arrival')}{rate} "
                    f"n={w.get('num_requests')}"
                    + (" prefix-reuse" if w.get("prefix_reuse") else ""))
        return (f"{self.variant} bs={w.get('batch_size')} prompt={w.get('prompt_tokens')} "
                f"new={w.get('new_tokens')}"
                + (f" depth={w['depth_tokens']}" if w.get("depth_tokens") else ""))


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:500]


def identity_row(cell: Cell) -> dict[str, Any]:
    row = empty_row(cell.metric_columns)
    w = cell.workload
    row.update(run_id=cell.run_id, cell_index=cell.index, suite=cell.suite, group=cell.group,
               model=cell.model["name"], variant=cell.variant, device=cell.device,
               workload=w.get("kind", "static-batch"), batch_size=w.get("batch_size", ""),
               prompt_tokens=w.get("prompt_tokens", ""), new_tokens=w.get("new_tokens", ""),
               warmup_runs=w.get("warmup_runs", ""), torch_threads=cell.threads)
    from infer_opt.core.stack import variant_sources

    row["plugin_sources"] = variant_sources(cell.variant)  # whose code ran under each name
    from infer_opt.workloads.base import workload_from_dict

    columns = getattr(workload_from_dict(w), "row_columns", None)
    if columns is not None:  # the load's own columns (online: policy, arrivals, SLOs)
        row.update(columns())
    return row
