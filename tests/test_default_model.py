"""One real run of the default model (SmolLM2-135M-Instruct from PyPI), end to end."""

import csv
import json
from pathlib import Path

import pytest

from infer_opt.core.models import DEFAULT_MODEL, resolve
from infer_opt.run.runner import run_suite
from infer_opt.run.suite import load_suite

from .conftest import write_suite

pytestmark = pytest.mark.slow


def test_default_model_loads_offline() -> None:
    ref = resolve(DEFAULT_MODEL)
    cfg = json.loads((Path(ref.path) / "config.json").read_text())
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["vocab_size"]) == (30, 576, 49152)
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"]) == (9, 3)
    assert "quantization_config" not in cfg
    assert ref.has_tokenizer and ref.max_context == 8192


def test_default_model_end_to_end(tmp_path: Path) -> None:
    suite = load_suite(str(write_suite(tmp_path / "s.toml", """
model = "smollm2-135m"
device = "cpu"
threads = 2
[[group]]
variants = ["baseline", "kv-cache", "kv-cache+sdpa"]
batch_sizes = [2]
prompt_tokens = 16
new_tokens = 8
min_repeats = 1
max_repeats = 1
warmup_runs = 1
""")))
    csv_path = run_suite(suite, tmp_path / "results", log=lambda _m: None)
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["status"] for r in rows] == ["ok"] * 3, [r["reason"] for r in rows]
    base = rows[0]
    # 134,515,008 fp32 parameters (tied embedding counted once) = 513.1 MiB.
    assert float(base["weight_mb"]) == pytest.approx(134_515_008 * 4 / 2**20, abs=0.01)
    samples = [json.loads(x) for x in csv_path.with_name(csv_path.stem + ".samples.jsonl")
               .read_text().splitlines()]
    assert samples[1]["tokens"] == samples[0]["tokens"] == samples[2]["tokens"]
    assert len(samples[0]["tokens"]) == 2 and len(samples[0]["tokens"][0]) == 8
