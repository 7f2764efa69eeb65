"""infer-opt: measure what each LLM inference optimization really buys."""

__version__ = "0.1.0"

# Bumped whenever a core column is added, renamed, removed or changes meaning (2: sampling,
# telemetry and arithmetic-intensity columns; samples lines keep per-run values under "runs").
# 3: energy and GPU state columns (core/energy.py).
SCHEMA_VERSION = 3
