from infer_opt.core.plugin import Settings
from infer_opt.plugins.ort import ORT


class ORTInt8(ORT):
    """Alone it selects the ORT backend too; `ort+ort-int8` is accepted and means the same."""

    name = "ort-int8"
    summary = "ONNX Runtime with dynamic int8 MatMul weights (onnxruntime.quantization)"

    def apply(self, settings: Settings) -> None:
        settings.set("backend", "onnxruntime", by=self.name)
        settings.set("kv_cache", "dynamic", by=self.name)
        settings.options["ort_int8"] = True
