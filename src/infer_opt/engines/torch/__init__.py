"""The torch runtime: its engine and the converters it needs."""
