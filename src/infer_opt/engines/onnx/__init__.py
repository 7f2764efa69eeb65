"""The onnx runtime: its engine and the converters it needs."""
