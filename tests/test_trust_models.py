"""Model folders checked up front: safetensors headers parse and cover the config, custom code
is refused, and trust_remote_code=False is pinned wherever src/ loads a model or tokenizer."""

from __future__ import annotations

import ast
import json
import shutil
import struct
from pathlib import Path

import pytest

from infer_opt.core.errors import UserError
from infer_opt.core.models import prepare_tiny, resolve

from .trust_helpers import assert_refused, cli, tiny_suite

SRC = Path(__file__).resolve().parents[1] / "src" / "infer_opt"


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A copy of the tiny random model, to be damaged by each test."""
    d = tmp_path / "model"
    shutil.copytree(prepare_tiny(), d)
    return d


def weights(d: Path) -> Path:
    return next(d.glob("*.safetensors"))


def damage_empty(d: Path) -> None:
    weights(d).write_bytes(b"")


def damage_garbage(d: Path) -> None:
    weights(d).write_bytes(b"\x00" * 3 + b"not a safetensors file at all" * 10)


def damage_truncated(d: Path) -> None:
    w = weights(d)
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])


def damage_header_not_json(d: Path) -> None:
    w = weights(d)
    w.write_bytes(struct.pack("<Q", 16) + b"{this is not js}" + b"\x00" * 64)


def damage_missing_layer(d: Path) -> None:
    cfg = json.loads((d / "config.json").read_text())
    cfg["num_hidden_layers"] = 3  # the weights hold layers 0 and 1
    (d / "config.json").write_text(json.dumps(cfg))


def damage_vocab(d: Path) -> None:
    cfg = json.loads((d / "config.json").read_text())
    cfg["vocab_size"] = 1000
    (d / "config.json").write_text(json.dumps(cfg))


def damage_custom_code(d: Path) -> None:
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "modeling_evil.py").write_text("raise SystemExit('custom code ran')\n")


def damage_remote_flag(d: Path) -> None:
    cfg = json.loads((d / "config.json").read_text())
    cfg["trust_remote_code"] = True
    (d / "config.json").write_text(json.dumps(cfg))


def damage_config(d: Path) -> None:
    (d / "config.json").write_text("{not json")


@pytest.mark.parametrize("damage,needles", [
    (damage_empty, ("not a valid safetensors file", "empty")),
    (damage_garbage, ("not a valid safetensors file",)),
    (damage_truncated, ("not a valid safetensors file", "truncated")),
    (damage_header_not_json, ("header is not JSON",)),
    (damage_missing_layer, ("lack decoder layer 2", "of the config's 3")),
    (damage_vocab, ("512 rows", "vocab_size 1000")),
    (damage_custom_code, ("custom model code", "auto_map", "trust_remote_code=False")),
    (damage_remote_flag, ("custom model code", "trust_remote_code")),
    (damage_config, ("not a readable JSON config",)),
])
def test_damaged_model_folder_is_one_line(model_dir: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str], damage,
                                          needles: tuple[str, ...]) -> None:
    damage(model_dir)
    with pytest.raises(UserError) as err:
        resolve(str(model_dir))
    assert "\n" not in str(err.value)
    suite = tiny_suite(tmp_path / "s.toml", ["kv-cache"])
    out = tmp_path / "out"
    code, _, err_text = cli(capsys, "run", "--suite", str(suite), "--model", str(model_dir),
                            "--out", str(out))
    assert_refused(code, err_text, "model", *needles)
    assert not out.exists()


def test_a_whole_copy_resolves(model_dir: Path) -> None:
    ref = resolve(str(model_dir))
    assert (ref.max_context, ref.vocab_size) == (512, 512)


def _pinned(call: ast.Call, source: str) -> bool:
    for kw in call.keywords:
        if kw.arg == "trust_remote_code":
            return isinstance(kw.value, ast.Constant) and kw.value.value is False
    # `**kwargs`: the module must pin the key in the dict it passes.
    return any(kw.arg is None for kw in call.keywords) and \
        '["trust_remote_code"] = False' in source


def test_trust_remote_code_is_pinned_everywhere() -> None:
    unpinned, calls = [], 0
    for path in SRC.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "from_pretrained"):
                calls += 1
                if not _pinned(node, source):
                    unpinned.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert calls >= 10  # the scan sees the loaders (engines, converters, models, compression)
    assert unpinned == []
