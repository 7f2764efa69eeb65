"""Keep library chatter out of the progress log (set INFER_OPT_VERBOSE=1 to keep it).

Each cell process would otherwise print torchao's CUDA-extension load failures, torch pytree
deprecation notices and a transformers progress bar per model load; the facts that matter
(versions, skips, failures) are in the rows.
"""

from __future__ import annotations

import logging
import os

NOISY_LOGGERS = ("torchao", "torch.utils._pytree", "bitsandbytes")


def quiet_libraries() -> None:
    if os.environ.get("INFER_OPT_VERBOSE"):
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
