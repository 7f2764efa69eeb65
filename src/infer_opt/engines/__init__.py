"""Engines run the model. The top of this package is the contract and the one loop:

- `base.py`: what an engine declares (dtypes, KV-cache kinds, options, hooks it honours) and
  provides (the step API, or `generate` for engines that schedule requests themselves);
- `decode.py`: the one decode loop that drives every engine with a step API.

One sub-package per runtime, each engine beside the converters it needs: `torch/`, `onnx/`
(ONNX Runtime and onnxruntime-genai, the export, the genai build, MatMulNBits copies, GGUF
blocks), `llamacpp/` (engine, GGUF file), `openvino/`, `ct2/`, `vllm/`. Engines register under
the entry-point group `infer_opt.engines`, exactly as third-party ones do.
"""
