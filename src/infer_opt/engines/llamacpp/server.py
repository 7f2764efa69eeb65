"""llama-cpp-python's OpenAI server (`python -m llama_cpp.server ...`) with llama.cpp's extra
buffer types set as the suite decides (engines/llamacpp/cpu.py): its settings have no such
option, so the model-parameter defaults it asks llama.cpp for are wrapped before it starts.

    python -m infer_opt.engines.llamacpp.server 0|1 ARGS...   (0: extra buffer types off)

Runs in .venv-llamacpp, started by engines/http/launch.py.
"""

from __future__ import annotations

import runpy
import sys


def main() -> None:
    use = sys.argv[1] == "1"
    sys.argv = ["llama_cpp.server", *sys.argv[2:]]
    import llama_cpp.llama_cpp as lc

    default = lc.llama_model_default_params

    def params():  # noqa: ANN202 - llama_cpp's ctypes struct
        p = default()
        p.use_extra_bufts = use
        return p

    lc.llama_model_default_params = params
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
