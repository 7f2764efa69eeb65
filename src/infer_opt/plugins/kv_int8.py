from infer_opt.plugins._kv_quant import KVQuant


class KVInt8(KVQuant):
    name = "kv-int8"
    summary = "dynamic KV cache stored as int8 (transformers QuantizedCache, HQQ backend)"
    bits = 8
