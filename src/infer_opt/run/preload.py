"""Imported once by the forkserver so every cell process starts with these already loaded.

Loading the Llama modeling code alone takes ~3-6 s of imports; paying it once per run instead of
once per cell matters on a 2-core box. Other architectures still import lazily in the cell.
"""

from infer_opt.core.quiet import quiet_libraries

quiet_libraries()  # before torch/transformers/torchao imports log anything

import torch  # noqa: E402,F401
from transformers import (  # noqa: E402,F401
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
    StaticCache,
)
from transformers.models.llama import modeling_llama  # noqa: E402,F401

from infer_opt.engines.torch import engine as torch_engine  # noqa: E402,F401
from infer_opt.run import cell  # noqa: E402,F401

quiet_libraries()  # transformers resets its own verbosity on import
