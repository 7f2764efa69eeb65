"""Keep library chatter out of the progress log (set INFER_OPT_VERBOSE=1 to keep it).

Each cell process would otherwise print torchao's CUDA-extension load failures, torch pytree
deprecation notices, bitsandbytes' hub trust check and a transformers progress bar per model
load; the facts that matter (versions, skips, failures) are in the rows. While a worker loads
its engine, what these libraries warn is recorded instead (`recorded`): a message that says
something about the measurement (bitsandbytes falling back from its fast CPU kernel) goes into
the row's notes; one that says nothing here (SAYS_NOTHING) is dropped.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# "kernels": bitsandbytes fetches its CPU kernels through it and, offline, warns that it skipped
# the hub's publisher trust check on every load.
NOISY_LOGGERS = ("torchao", "torch.utils._pytree", "bitsandbytes", "kernels")
# Messages that say nothing to a user of this suite (matched anywhere in the text).
SAYS_NOTHING = (
    re.compile(r"Failed to load \S*/_C\w*\.\S*\.so"),  # torchao's CUDA-only extensions
    re.compile(r"is an Enum subclass and is now natively supported"),  # torch pytree notice
    re.compile(r"torch_dtype.* is deprecated"),  # transformers' argument rename
)
MAX_NOTES = 3  # per load: the row's notes stay readable
NOTE_CHARS = 240


def verbose() -> bool:
    return bool(os.environ.get("INFER_OPT_VERBOSE"))


def quiet_libraries() -> None:
    if verbose():
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


def says_something(message: str) -> bool:
    return not any(p.search(message) for p in SAYS_NOTHING)


def as_note(source: str, message: str) -> str:
    text = " ".join(message.split())
    return f"{source} warned: {text}"[:NOTE_CHARS]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def recorded(notes: list[str]) -> Iterator[None]:
    """Inside: the noisy libraries' warnings and Python warnings are kept from stderr; those
    that say something are appended to `notes` (at most MAX_NOTES, each once) at the end.
    Only around loading: bitsandbytes int8 warns on every forward, which must cost nothing
    in a timed run (its logger stays at ERROR there)."""
    if verbose():
        yield
        return
    handler = _Collect()
    saved = []
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.setLevel(logging.WARNING)
        logger.propagate = False
        logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            yield
    finally:
        for logger, level, propagate in saved:
            logger.removeHandler(handler)
            logger.setLevel(max(level, logging.ERROR))
            logger.propagate = propagate
        found = [as_note(r.name.split(".")[0], r.getMessage()) for r in handler.records]
        found += [as_note(w.category.__name__, str(w.message)) for w in caught]
        for note in dict.fromkeys(found):
            if sum(" warned: " in n for n in notes) >= MAX_NOTES:
                break
            if says_something(note) and note not in notes:
                notes.append(note)


def silence_warnings() -> None:
    """In a worker, after loading: Python warnings no longer reach the terminal."""
    if not verbose():
        warnings.simplefilter("ignore")
