"""infer-opt: measure what each LLM inference optimization really buys."""

__version__ = "0.1.0"

# Bumped whenever a column is renamed, removed or changes meaning.
SCHEMA_VERSION = 1
