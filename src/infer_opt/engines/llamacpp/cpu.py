"""Whether llama.cpp's extra buffer types (weight repacking into AMX tiles or SIMD layouts)
are used on this CPU.

llama.cpp picks them at model load (`llama_model_params.use_extra_bufts`). On a CPU that
advertises AMX, its AMX buffer type runs tile instructions; under KVM here (2-core Sapphire
Rapids VM, llama-cpp-python 0.3.36 built with GGML_NATIVE) the first prefill of more than a few
tokens died with SIGILL, in process and behind llama.cpp's own server alike. So where the CPU
advertises AMX they are off unless asked for (`llamacpp[extra_bufts=true]`), and the row's notes
say so; elsewhere llama.cpp's default (on) stands.
"""

from __future__ import annotations

from pathlib import Path


def advertises_amx(cpuinfo: str | None = None) -> bool:
    """True when /proc/cpuinfo's flags name an AMX tile unit (amx_tile)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
    return any(line.startswith("flags") and " amx_tile" in f" {line.split(':', 1)[-1]}"
               for line in cpuinfo.splitlines())


def extra_buffers(asked: bool | None) -> tuple[bool, str]:
    """(use llama.cpp's extra buffer types, a note for the row, empty when nothing to say)."""
    if asked is not None:
        return asked, "" if asked else "extra buffer types off (extra_bufts=false)"
    if advertises_amx():
        return False, ("extra buffer types (AMX, weight repacking) off: this CPU advertises AMX, "
                       "whose tiles crashed llama.cpp with SIGILL under KVM; "
                       "llamacpp[extra_bufts=true] turns them on")
    return True, ""
