"""Knowledge distillation: a student with fewer layers, trained to match the teacher's outputs.

The student is the teacher with some decoder layers removed (layers.keep_layers), initialised
from the teacher's weights: embeddings, final norm and the tied lm_head are the teacher's own,
as are the kept layers. Dropping layers alone costs much fidelity (`layer_dropped_student`, the
un-trained control); training then recovers part of it.

Objective (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"), per position:
    loss = (1 - alpha) * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + alpha * CE(z_s, next)
T^2 keeps the KL gradients on the same scale whatever T. AdamW, linear warm-up then cosine
decay, fp32 on CPU with the torch thread count set and recorded.

Corpus: CPython's documentation (corpus.py), never the evaluation text; every 20th chunk is held
out for a validation loss.

Budget: `steps` and `minutes`, whichever ends first (the schedule is planned for `steps`; a run
cut by `minutes` records where it stopped).

Cache: cache_root()/students/<teacher>-<n>L-<key>/, a normal model directory (config.json,
model.safetensors, tokenizer files) plus distill.json (recipe, losses, wall time) and loss.png.
The key hashes the recipe, the teacher weights' content (core/artifacts.weights_digest), the
corpus and the library versions. Built once by core/artifacts.cached_build: in a scratch dir
renamed into place, under a file lock, so two processes never train the same recipe twice.

Plugin notes (`distilled`, torch engine): the student is a different checkpoint, so the plugin
points the engine at `cached_student()` (None: skip the row with "run `infer-opt distill`";
never train inside a benchmark row). The un-trained control is a model transform on the
teacher: `keep_layers(model, student_layers(Recipe(), model))` (in place, no copy needed).
Fidelity must be measured against the *teacher's* baseline reference, not the student's own.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from infer_opt.compression import corpus
from infer_opt.compression.layers import block_influence, keep_layers, least_important
from infer_opt.core.artifacts import cache_root, cached_build, key_digest, model_digest
from infer_opt.core.models import DEFAULT_MODEL, ModelRef

# Bump when the training code changes what a recipe produces, so stale students are not reused.
RECIPE_VERSION = 1
SELECT_RULES = ("importance", "uniform")
EVAL_CHUNKS = 4  # validation chunks scored at each evaluation (fixed set, same every time)


@dataclass(frozen=True)
class Recipe:
    """Everything that decides what student comes out (all of it goes into the cache key)."""

    teacher: str = DEFAULT_MODEL
    layers: int | None = None  # layers the student keeps; None: half of the teacher's
    keep_layers: tuple[int, ...] | None = None  # explicit indices; overrides layers/select
    select: str = "importance"  # how `layers` are chosen: SELECT_RULES
    # The default budget: 40 steps of 2 x 256 tokens (20 k tokens), capped at 12 minutes so the
    # whole build (teacher load, Block Influence, validations, save) stays under 15 minutes on
    # the shared 2-core CPU, where a step took 13-18 s (measured: 9-13 min per build).
    steps: int = 40
    minutes: float = 12.0
    temperature: float = 1.0  # T=1 trains exactly the KL the fidelity columns report
    alpha: float = 0.0  # weight of the cross-entropy on the text; 0: pure distillation
    lr: float = 1e-3  # best of 3e-4, 1e-3, 2e-3 on the default budget (val KL 1.67, 1.38, 1.55)
    batch: int = 2
    seq_len: int = 256
    warmup_frac: float = 0.05
    weight_decay: float = 0.0
    freeze_embeddings: bool = True  # the tied embedding / lm_head stays the teacher's
    seed: int = 0


@dataclass
class History:
    """What a training run did, for distill.json and the loss plot."""

    train: list[float] = field(default_factory=list)  # objective per step
    val: list[tuple[int, float]] = field(default_factory=list)  # (steps done, objective)
    val_kl: list[tuple[int, float]] = field(default_factory=list)  # (steps done, KL at T=1)
    steps_done: int = 0
    stopped_by: str = "steps"  # or "minutes"
    wall_s: float = 0.0


def choose_layers(teacher: Any, n_keep: int, select: str, ids: torch.Tensor | None) -> list[int]:
    """Indices of the n_keep teacher layers the student keeps, ascending.

    "importance": the n_keep of highest Block Influence on the calibration ids [N, S] (the
    layers whose removal turns the residual stream least go). "uniform": evenly spaced,
    first and last included (15 of 30: 0, 2, ..., 14, 17, 19, ..., 29).
    """
    n = len(teacher.model.layers)
    if not 1 <= n_keep <= n:
        raise ValueError(f"n_keep must be in [1, {n}], got {n_keep}")
    if select == "uniform":
        return sorted({round(i * (n - 1) / max(n_keep - 1, 1)) for i in range(n_keep)})
    if select != "importance" or ids is None:
        raise ValueError(f"select must be one of {SELECT_RULES} (importance needs ids)")
    drop = least_important(block_influence(teacher, ids), n - n_keep)
    return [i for i in range(n) if i not in drop]


def layer_dropped_student(teacher: Any, keep: Sequence[int]) -> Any:
    """The un-trained student: a copy of the teacher with only layers `keep`. Teacher untouched.

    deepcopy keeps the tie between embed_tokens and lm_head (one shared Parameter).
    """
    return keep_layers(copy.deepcopy(teacher), keep)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), mean over positions. Logits [..., V].

    Exactly 0 for identical logits: both log-softmaxes are the same numbers, so every term of
    the sum is p * (x - x) = 0.
    """
    v = student_logits.shape[-1]
    s, t = student_logits.reshape(-1, v), teacher_logits.reshape(-1, v)  # [P, V], no copy
    if temperature != 1.0:  # skip two [P, V] copies in the common case
        s, t = s / temperature, t / temperature
    log_s, log_t = F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1)  # [P, V]
    kl = F.kl_div(log_s, log_t, log_target=True, reduction="batchmean")  # sum / P
    return kl * temperature**2


def objective(student_logits: torch.Tensor, teacher_logits: torch.Tensor, ids: torch.Tensor,
              temperature: float, alpha: float) -> torch.Tensor:
    """(1 - alpha) * KD + alpha * CE. Logits [B, S, V], ids [B, S].

    KD is taken at every position (the teacher's distribution after the last token is as good
    a target as any); CE at the S - 1 positions that have a next token in the chunk.
    """
    loss = student_logits.new_zeros(())
    if alpha < 1:
        loss = loss + (1 - alpha) * kd_loss(student_logits, teacher_logits, temperature)
    if alpha > 0:
        s = student_logits[:, :-1]  # position i predicts ids[:, i + 1]
        loss = loss + alpha * F.cross_entropy(s.reshape(-1, s.shape[-1]), ids[:, 1:].reshape(-1))
    return loss


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1, then cosine to 0.1 at `total` (the last 10 % of lr is kept)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def _progress(total: int) -> Any:
    """tqdm on stderr when installed, else None (train() then prints a line every 10 steps)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="distill", unit="step", file=sys.stderr, mininterval=2.0)


@dataclass(frozen=True)
class ValSet:
    """Held-out chunks and the teacher's logits on them, computed once per run."""

    ids: torch.Tensor  # [M, S] int64
    teacher_logits: torch.Tensor  # [M, S, V] float32 (M=4, S=256: 200 MB for SmolLM2)


def _beside_bar(bar: Any, log: Callable[[str], None]) -> Callable[[str], None]:
    """`log` that clears the bar first, so a message never lands in the middle of it."""
    def say(msg: str) -> None:
        with bar.external_write_mode(file=sys.stderr):
            log(msg)
    return say


@torch.no_grad()
def val_set(teacher: Any, ids: torch.Tensor) -> ValSet:
    logits = torch.cat([teacher(input_ids=row, use_cache=False).logits for row in ids.split(1)])
    return ValSet(ids, logits)


@torch.no_grad()
def evaluate(student: Any, val: ValSet, recipe: Recipe) -> tuple[float, float]:
    """(objective, KL at T=1) of the student on the validation chunks, mean per chunk."""
    was_training = student.training
    student.eval()
    total, kl = 0.0, 0.0
    for row, t in zip(val.ids.split(1), val.teacher_logits.split(1)):  # [1, S], [1, S, V]
        s = student(input_ids=row, use_cache=False).logits  # [1, S, V]
        total += float(objective(s, t, row, recipe.temperature, recipe.alpha))
        kl += float(kd_loss(s, t, 1.0))
    student.train(was_training)
    return total / val.ids.shape[0], kl / val.ids.shape[0]


def train(student: Any, teacher: Any, train_ids: torch.Tensor, val_ids: torch.Tensor,
          recipe: Recipe, evals: int = 4,
          log: Callable[[str], None] | None = None) -> History:
    """Distil teacher into student (in place) on train_ids [N, S]; validate on val_ids [M, S]
    before training, `evals` times during it and once after.

    Stops after recipe.steps steps or recipe.minutes of wall time (the validations before and
    during training count, the final one does not), whichever comes first.
    Seeded: the same recipe and thread count give the same batches and the same losses.
    """
    start = time.perf_counter()
    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    teacher.eval()
    student.train()
    if recipe.freeze_embeddings:
        # Tied: this also freezes lm_head. Saves its weight gradient (a [V, H] matmul per
        # batch) and the AdamW state of 28 M of SmolLM2's 81 M student weights, and keeps the
        # student's output space the teacher's.
        student.get_input_embeddings().weight.requires_grad_(False)
    params = [p for p in student.parameters() if p.requires_grad]
    eval_every = max(1, recipe.steps // (evals + 1))
    # fused: one pass over all tensors per step instead of a Python loop over them
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay, fused=True)
    warmup = max(1, round(recipe.warmup_frac * recipe.steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, recipe.steps, warmup))
    hist = History()
    val = val_set(teacher, val_ids)
    _record_val(hist, student, val, recipe, log)  # step 0: the un-trained student
    bar = _progress(recipe.steps)
    if bar is not None and log is not None:
        log = _beside_bar(bar, log)
    order = torch.empty(0, dtype=torch.long)
    for step in range(recipe.steps):
        if time.perf_counter() - start >= recipe.minutes * 60:
            hist.stopped_by = "minutes"
            break
        if order.numel() < recipe.batch:  # a fresh shuffle per epoch
            order = torch.cat([order, torch.randperm(train_ids.shape[0], generator=gen)])
        batch, order = train_ids[order[:recipe.batch]], order[recipe.batch:]  # [B, S]
        with torch.no_grad():
            t_logits = teacher(input_ids=batch, use_cache=False).logits  # [B, S, V]
        s_logits = student(input_ids=batch, use_cache=False).logits  # [B, S, V]
        loss = objective(s_logits, t_logits, batch, recipe.temperature, recipe.alpha)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        hist.train.append(loss.detach().item())
        hist.steps_done = step + 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{hist.train[-1]:.4f}", refresh=False)
        elif log is not None and hist.steps_done % 10 == 0:
            log(f"distill: step {hist.steps_done}/{recipe.steps} loss {hist.train[-1]:.4f}")
        if hist.steps_done % eval_every == 0 and hist.steps_done < recipe.steps:
            _record_val(hist, student, val, recipe, log)
    if bar is not None:
        bar.close()
    _record_val(hist, student, val, recipe, log)
    hist.wall_s = time.perf_counter() - start
    student.eval()
    return hist


def _record_val(hist: History, student: Any, val: ValSet, recipe: Recipe,
                log: Callable[[str], None] | None) -> None:
    loss, kl = evaluate(student, val, recipe)
    hist.val.append((hist.steps_done, loss))
    hist.val_kl.append((hist.steps_done, kl))
    if log is not None:
        log(f"distill: step {hist.steps_done} val loss {loss:.4f} (KL at T=1: {kl:.4f})")


# ---- the cached build ----------------------------------------------------------------------


def recipe_key(recipe: Recipe, teacher_id: str) -> dict[str, Any]:
    """The JSON-able dict that identifies a student; its hash names the cache directory."""
    import transformers

    return {"recipe_version": RECIPE_VERSION, **dataclasses.asdict(recipe),
            "teacher_weights": teacher_id,
            "calibration": [corpus.CALIBRATION_SEQS, corpus.CALIBRATION_LEN],
            "corpus": corpus.digest(), "val_every": corpus.VAL_EVERY,
            "eval_chunks": EVAL_CHUNKS, "torch": torch.__version__,
            "transformers": transformers.__version__}


def plot_losses(hist: History, path: Path, title: str = "") -> bool:
    """loss.png: train objective per step and validation objective; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(range(1, len(hist.train) + 1), hist.train, lw=0.8, alpha=0.6, label="train")
    ax.plot([s for s, _ in hist.val], [v for _, v in hist.val], "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("distillation objective")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def n_keep(recipe: Recipe, n_layers: int) -> int:
    """How many layers the student of `recipe` has, for a teacher of n_layers."""
    if recipe.keep_layers is not None:
        return len(recipe.keep_layers)
    return recipe.layers if recipe.layers is not None else n_layers // 2


def student_layers(recipe: Recipe, teacher: Any) -> list[int]:
    """The teacher layer indices the recipe's student keeps, ascending.

    "importance" ranks layers exactly as layers.prune_layers does (Block Influence on
    corpus.calibration_ids), so `--layers 15` keeps what `prune-layers[n=15]` keeps.
    """
    if recipe.keep_layers is not None:
        return list(recipe.keep_layers)
    n = n_keep(recipe, len(teacher.model.layers))
    ids = corpus.calibration_ids(teacher) if recipe.select == "importance" else None
    return choose_layers(teacher, n, recipe.select, ids)


def teacher_layers(ref: ModelRef) -> int:
    """The teacher's decoder layer count, from its config alone (no weights loaded)."""
    from transformers import AutoConfig

    return int(AutoConfig.from_pretrained(ref.path, trust_remote_code=False).num_hidden_layers)


def student_dir(recipe: Recipe, ref: ModelRef) -> Path:
    """Where the recipe's student lives. Cheap: no model load, only hashes.

    The key holds the recipe as given, not the chosen layer indices: they follow from the
    teacher weights, the corpus and the rule, which the key also holds.
    """
    key = recipe_key(recipe, model_digest(ref.path))
    return cache_root() / "students" / (
        f"{Path(ref.path).name}-{n_keep(recipe, teacher_layers(ref))}L-{key_digest(key)}")


def cached_student(recipe: Recipe | None = None) -> Path | None:
    """The directory of the recipe's student (default: the default recipe's) if it is already
    built, else None. Never trains; for plugins that use the student (spec-student, distilled)."""
    from infer_opt.core.models import resolve

    recipe = recipe if recipe is not None else Recipe()
    target = student_dir(recipe, resolve(recipe.teacher))
    return target if (target / "config.json").is_file() else None


def distill(recipe: Recipe, threads: int = 2,
            log: Callable[[str], None] | None = None) -> Path:
    """The student directory for this recipe: from the cache, or trained now (locked, atomic)."""
    from infer_opt.core.models import resolve

    ref = resolve(recipe.teacher)
    target = student_dir(recipe, ref)
    # In this process: the training shows its progress bar and log lines on this terminal.
    cached_build(target, lambda out: _build(recipe, ref, threads, out, log), done="config.json",
                 what="distillation")
    return target


def _build(recipe: Recipe, ref: ModelRef, threads: int, out: Path,
           log: Callable[[str], None] | None) -> None:
    """Train the student and write it, distill.json and loss.png into `out`."""
    from transformers import AutoModelForCausalLM

    from infer_opt.core.models import load_tokenizer

    t0 = time.perf_counter()
    torch.set_num_threads(threads)
    tokenizer = load_tokenizer(ref)
    teacher = AutoModelForCausalLM.from_pretrained(ref.path, dtype=torch.float32,
                                                   trust_remote_code=False).eval()
    keep = student_layers(recipe, teacher)
    stream = corpus.token_stream(tokenizer, int(teacher.config.vocab_size))
    train_ids, val_ids = corpus.chunks(stream, recipe.seq_len)
    student = layer_dropped_student(teacher, keep)
    if log is not None:
        log(f"distill: {ref.name} ({len(teacher.model.layers)} layers) -> student layers {keep}; "
            f"{train_ids.shape[0]} train / {val_ids.shape[0]} val chunks of {recipe.seq_len} "
            f"tokens; {threads} torch threads")
    run = train(student, teacher, train_ids, val_ids[:EVAL_CHUNKS], recipe, log=log)
    student.save_pretrained(out, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    plot_losses(run, out / "loss.png",
                f"{ref.name} -> {len(keep)} layers: T={recipe.temperature}, alpha={recipe.alpha}, "
                f"lr={recipe.lr}, batch {recipe.batch}x{recipe.seq_len}, {run.steps_done} steps, "
                f"{run.wall_s / 60:.1f} min")
    report = {"key": recipe_key(recipe, model_digest(ref.path)), "keep_layers": keep,
              "threads": torch.get_num_threads(),
              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(libgomp default: active)"),
              "steps_done": run.steps_done,
              "stopped_by": run.stopped_by, "train_wall_s": round(run.wall_s, 1),
              "build_wall_s": round(time.perf_counter() - t0, 1),
              "final_train_loss": _tail_mean(run.train, 10), "final_val_loss": run.val[-1][1],
              "final_val_kl_t1": run.val_kl[-1][1], "val": run.val, "val_kl_t1": run.val_kl,
              "train": run.train}
    (out / "distill.json").write_text(json.dumps(report, indent=1))


def _tail_mean(values: list[float], n: int) -> float:
    tail = values[-n:]
    return sum(tail) / len(tail) if tail else float("nan")
