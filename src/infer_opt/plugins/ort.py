from infer_opt.core.plugin import Plugin, Settings


class ORT(Plugin):
    name = "ort"
    summary = "ONNX Runtime: the model exported to one ONNX graph with past key/values (KV cache)"
    requires_packages = ("onnxruntime", "onnx", "onnxscript")

    def unavailable_reason(self, device: str) -> str | None:
        reason = super().unavailable_reason(device)
        if reason is None and device.startswith("cuda"):
            import onnxruntime

            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                return "onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)"
        return reason

    def apply(self, settings: Settings) -> None:
        settings.set("backend", "onnxruntime", by=self.name)
        # The exported graph takes past and returns present key/values: a KV cache is built in.
        settings.set("kv_cache", "dynamic", by=self.name)
