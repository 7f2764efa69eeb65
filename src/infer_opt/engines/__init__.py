"""Engines run the model: torch (default), ONNX Runtime, vLLM, and any registered under the
entry-point group `infer_opt.engines`. `base.py` is what an engine declares and provides;
`decode.py` is the one decode loop that drives every engine with a step API."""
