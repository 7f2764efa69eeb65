"""Moved: the results columns and their meaning live in infer_opt.format.columns. This module
re-exports them so code written against infer_opt.core.schema keeps working."""

from infer_opt.format.columns import *  # noqa: F401,F403
from infer_opt.format.columns import (  # noqa: F401
    COLUMNS,
    COST,
    ENVIRONMENT,
    FIDELITY,
    IDENTITY,
    LATENCY,
    LATENCY_METRICS,
    MEMORY,
    ROOFLINE,
    SAMPLING,
    SERVING,
    SERVING_LOAD,
    SERVING_SLO,
    STATUS,
    STATUSES,
    TELEMETRY,
    THROUGHPUT,
    check_row,
    column,
    direction,
    empty_row,
    floor,
    run_columns,
)
