"""Imported once by the forkserver so every cell process starts with these already loaded.

Loading the Llama modeling code alone takes ~3-6 s of imports; paying it once per run instead of
once per cell matters on a 2-core box. Other architectures still import lazily in the cell.
"""

import torch  # noqa: F401
from transformers import (  # noqa: F401
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
    StaticCache,
)
from transformers.models.llama import modeling_llama  # noqa: F401

from . import cell  # noqa: F401
from .backends import torch_backend  # noqa: F401
