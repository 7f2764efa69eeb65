"""Distillation on the tiny model: the KD loss by hand, a loss that falls, cache keys, the cached
build and a student that reloads with identical logits; bad `infer-opt distill` arguments."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from infer_opt.cli import main as cli_main
from infer_opt.compression import corpus, distill
from infer_opt.compression.distill import (
    Recipe,
    kd_loss,
    key_digest,
    layer_dropped_student,
    recipe_key,
    train,
)
from infer_opt.core.models import resolve

PROMPT = torch.tensor([[5, 17, 42, 99, 7, 300, 12, 64]])  # [1, 8]


@pytest.fixture()
def teacher() -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(resolve("tiny-random").path,
                                                dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def chunks() -> tuple[torch.Tensor, torch.Tensor]:
    return corpus.chunks(corpus.token_stream(None, 512), 64)  # bytes of the corpus


def test_kd_loss_of_a_model_against_itself_is_zero() -> None:
    logits = torch.randn(2, 5, 512) * 4  # [B, S, V]
    for t in (1.0, 2.0, 0.5):
        assert float(kd_loss(logits, logits, t)) == 0.0


def test_kd_loss_by_hand() -> None:
    teacher = torch.tensor([[0.0, 0.0]])  # p = (1/2, 1/2)
    student = torch.tensor([[0.0, math.log(3.0)]])  # q = (1/4, 3/4)
    want = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # = ln(4/3) / 2
    assert float(kd_loss(student, teacher, 1.0)) == pytest.approx(want, rel=1e-6)
    # T^2 * KL at temperature T is KL at 1 of the logits divided by T, times T^2.
    assert float(kd_loss(student, teacher, 2.0)) == pytest.approx(
        4.0 * float(kd_loss(student / 2, teacher / 2, 1.0)), rel=1e-6)


def test_layer_dropped_student_is_a_slice_and_leaves_the_teacher(teacher) -> None:
    student = layer_dropped_student(teacher, [1])
    assert len(teacher.model.layers) == 2 and teacher.config.num_hidden_layers == 2
    assert len(student.model.layers) == 1 and student.config.num_hidden_layers == 1
    assert student.lm_head.weight is student.model.embed_tokens.weight  # still tied
    assert torch.equal(student.model.layers[0].mlp.up_proj.weight,
                       teacher.model.layers[1].mlp.up_proj.weight)
    full = layer_dropped_student(teacher, [0, 1])
    with torch.inference_mode():
        assert torch.equal(full(PROMPT).logits, teacher(PROMPT).logits)
        out = student.generate(PROMPT, max_new_tokens=4, do_sample=False, use_cache=True)
    assert out.shape == (1, 12)


def test_choose_layers_uniform_and_importance(teacher) -> None:
    assert distill.choose_layers(teacher, 1, "uniform", None) == [0]
    assert distill.choose_layers(teacher, 2, "uniform", None) == [0, 1]
    ids = corpus.calibration_ids(teacher, n_seqs=2, seq_len=32)
    assert distill.choose_layers(teacher, 2, "importance", ids) == [0, 1]
    assert len(distill.choose_layers(teacher, 1, "importance", ids)) == 1


def test_distillation_loss_falls_and_reloads_identically(teacher, chunks, tmp_path) -> None:
    train_ids, val_ids = chunks
    student = layer_dropped_student(teacher, [1])
    recipe = Recipe(teacher="tiny-random", steps=30, batch=4, seq_len=64, lr=1e-3, seed=0)
    hist = train(student, teacher, train_ids, val_ids[:2], recipe)
    assert hist.steps_done == 30 and hist.stopped_by == "steps" and len(hist.train) == 30
    first, last = sum(hist.train[:5]) / 5, sum(hist.train[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    assert hist.val[-1][1] < hist.val[0][1]  # held-out chunks too
    assert [s for s, _ in hist.val] == [0, 6, 12, 18, 24, 30]
    # freeze_embeddings (default): the tied embedding / lm_head is still the teacher's.
    assert torch.equal(student.lm_head.weight, teacher.lm_head.weight)
    assert not torch.equal(student.model.layers[0].mlp.up_proj.weight,
                           teacher.model.layers[1].mlp.up_proj.weight)
    # The same recipe and threads give the same losses (seeded batch order).
    again = train(layer_dropped_student(teacher, [1]), teacher, train_ids, val_ids[:2], recipe)
    assert again.train == hist.train
    student.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    with torch.inference_mode():
        assert torch.equal(reloaded(PROMPT).logits, student.eval()(PROMPT).logits)


def test_minutes_bound_stops_training(teacher, chunks) -> None:
    train_ids, val_ids = chunks
    recipe = Recipe(teacher="tiny-random", steps=1000, minutes=1e-9, batch=2, seq_len=64)
    hist = train(layer_dropped_student(teacher, [1]), teacher, train_ids, val_ids[:1], recipe)
    assert hist.stopped_by == "minutes" and hist.steps_done == 0


def test_cache_key_changes_with_every_recipe_field() -> None:
    base = Recipe()
    digests = {key_digest(recipe_key(base, "w0"))}
    changed = {"teacher": "tiny-random", "layers": 10, "keep_layers": (0, 2), "select": "uniform",
               "steps": 41, "minutes": 13.0, "temperature": 2.0, "alpha": 0.5, "lr": 1e-4,
               "batch": 4, "seq_len": 128, "warmup_frac": 0.1, "weight_decay": 0.01,
               "freeze_embeddings": False, "seed": 1}
    assert set(changed) == {f.name for f in dataclasses.fields(Recipe)}
    for name, value in changed.items():
        digests.add(key_digest(recipe_key(dataclasses.replace(base, **{name: value}), "w0")))
    digests.add(key_digest(recipe_key(base, "w1")))  # other teacher weights
    assert len(digests) == len(changed) + 2
    assert key_digest(recipe_key(base, "w0")) == key_digest(recipe_key(Recipe(), "w0"))


def test_distill_builds_once_into_the_cache(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("INFER_OPT_CACHE", str(tmp_path))
    recipe = Recipe(teacher="tiny-random", layers=1, steps=4, batch=2, seq_len=64)
    assert distill.cached_student(recipe) is None
    out = distill.distill(recipe, threads=1)
    assert distill.cached_student(recipe) == out
    assert out.parent == tmp_path / "students" and out.name.startswith("tiny-random-llama-v1-1L-")
    for name in ("config.json", "model.safetensors", "distill.json", "loss.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "distill.json").read_text())
    assert report["steps_done"] == 4 and report["threads"] == 1 and len(report["train"]) == 4
    assert report["key"]["steps"] == 4 and len(report["keep_layers"]) == 1
    assert not list((tmp_path / "students").glob(".*build-*"))  # the scratch dir was renamed
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 1

    def no_training(*_a: object, **_k: object) -> None:
        raise AssertionError("a cached student was trained again")
    monkeypatch.setattr(distill, "_build", no_training)
    assert distill.distill(recipe, threads=1) == out
    assert distill.student_dir(recipe, resolve("tiny-random")) == out


@pytest.mark.parametrize("argv, field", [
    (["--alpha", "1.5"], "alpha"),
    (["--steps", "0"], "steps"),
    (["--temperature", "0"], "temperature"),
    (["--keep-layers", "2,1"], "keep-layers"),
    (["--keep-layers", "0,x"], "keep-layers"),
    (["--model", "tiny-random", "--keep-layers", "0,7"], "keep-layers"),
    (["--model", "tiny-random", "--layers", "3"], "layers"),
    (["--model", "tiny-random", "--seq-len", "100000"], "seq-len"),
    (["--threads", "0"], "threads"),
])
def test_distill_bad_arguments_are_one_line(capsys, argv, field) -> None:
    assert cli_main(["distill", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"infer-opt: error: {field}: ") and "\n" not in err


def test_distill_command_prints_the_student_dir(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setenv("INFER_OPT_CACHE", str(tmp_path))
    argv = ["distill", "--model", "tiny-random", "--keep-layers", "1", "--steps", "2",
            "--batch", "1", "--seq-len", "32", "--threads", "1"]
    assert cli_main(argv) == 0
    out = Path(capsys.readouterr().out.strip())
    assert (out / "config.json").is_file()
    assert json.loads((out / "distill.json").read_text())["keep_layers"] == [1]
