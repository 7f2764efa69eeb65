"""The llamacpp runtime: its engine and the converters it needs."""
