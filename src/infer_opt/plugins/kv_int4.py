from infer_opt.plugins._kv_quant import KVQuant


class KVInt4(KVQuant):
    name = "kv-int4"
    summary = "dynamic KV cache stored as packed int4 (transformers QuantizedCache, HQQ backend)"
    bits = 4
