"""The ct2 runtime: its engine and the converters it needs."""
