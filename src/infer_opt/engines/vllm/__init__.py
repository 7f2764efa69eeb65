"""The vllm runtime: its engine and the converters it needs."""
