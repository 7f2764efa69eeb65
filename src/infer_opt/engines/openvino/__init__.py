"""The openvino runtime: its engine and the converters it needs."""
