"""infer-opt: measure what each LLM inference optimization really buys."""

__version__ = "0.1.0"

# Bumped whenever a core column is added, renamed, removed or changes meaning (2: sampling,
# telemetry and arithmetic-intensity columns; samples lines keep per-run values under "runs").
# 3: plugin_sources (which distribution provided each part of the variant).
# 4: depth_tokens, KV-cache memory, run_added_mb, bandwidth_method, fidelity at depth.
# 5: energy and GPU state columns (core/energy.py).
# 6: concurrency (closed-loop clients of an online load, workloads/online/closed_loop.py).
# Older files are read with the columns added since left empty (format/columns.ADDED_IN).
SCHEMA_VERSION = 6
