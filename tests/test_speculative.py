"""Speculative decoding on the tiny model: tokens equal plain greedy for every draft kind and k,
exact acceptance counts and stamps, cache rollback, prompt lookup, and what the plan refuses."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from infer_opt.core.errors import UserError
from infer_opt.core.stack import build_stack
from infer_opt.core.timing import HostClock
from infer_opt.engines.base import StepInput
from infer_opt.engines.decode import generate
from infer_opt.plugins.speculative.decoding import speculative_generate, verify
from infer_opt.plugins.speculative.lookup import PromptLookup
from infer_opt.plugins.speculative.self_draft import first_layers
from infer_opt.run.suite import load_suite

from .conftest import load_engine, write_suite
from .tables import flat


def sharp(variant: str) -> Any:
    """The tiny model (fp32) with larger random weights, the same for every engine loaded.

    A verify step computes T positions in one forward; its logits can differ from one-token
    steps in the last float bits, which flips an argmax only at a near-tie. With the default
    init (std 0.02) greedy logits are nearly flat, so such ties are common and the output
    barely depends on the context (it repeats one token, which any draft guesses); with weights
    of std 3/sqrt(fan_in), greedy tokens are decided by clear margins and change with the whole
    context, so drafts are often rejected and the rollback is exercised."""
    engine = load_engine(variant)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in engine.model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 3.0 / p.shape[1] ** 0.5)
    return engine


def run(engine: Any, prompt: torch.Tensor, n: int) -> torch.Tensor:
    with engine.context():
        return generate(engine, prompt, n, HostClock()).tokens  # [1, n]


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 1-layer student: the sharp target's first layer, saved as a model directory (a stand-in
    for `infer-opt distill`'s output; same vocabulary, a weaker model)."""
    path = tmp_path_factory.mktemp("student")
    first_layers(sharp("kv-cache").model, 1).save_pretrained(path)
    return str(path)


def prompts() -> list[torch.Tensor]:
    """A random prompt, and one that repeats itself (so prompt lookup finds n-grams)."""
    x = torch.randint(3, 512, (1, 12), generator=torch.Generator().manual_seed(1))
    return [x, torch.cat([x, x[:, :7], x], dim=1)]


DRAFTS = ["spec-lookup", "spec-self[layers=1]", "spec-student"]
CASES = [(cache, draft, k) for cache in ("kv-cache", "static-cache") for draft in DRAFTS
         for k in (1, 4)]


@pytest.mark.parametrize("cache,draft,k", CASES, ids=[f"{c}+{d}-k{k}" for c, d, k in CASES])
def test_tokens_equal_plain_greedy(cache: str, draft: str, k: int, student_dir: str) -> None:
    if draft == "spec-student":
        draft = f"spec-student[path={student_dir}]"
    draft = draft.replace("]", f",k={k}]") if "[" in draft else f"{draft}[k={k}]"
    plain, spec = sharp(cache), sharp(f"{cache}+{draft}")
    for prompt in prompts():
        assert torch.equal(run(spec, prompt, 24), run(plain, prompt, 24))
    c = spec.settings.counters
    assert c["spec_target_forwards"] + c["spec_accepted"] == 2 * 23  # every token after the first
    if "lookup" not in draft:
        # Both branches ran: some drafts accepted, some rejected (then the cache was cropped).
        assert 0 < c["spec_accepted"] < c["spec_drafted"]


def test_a_draft_as_deep_as_the_target_is_always_accepted() -> None:
    # spec-self with all layers drafts exactly the target's greedy tokens.
    spec = sharp("kv-cache+spec-self[layers=2,k=4]")
    prompt = prompts()[0]
    assert torch.equal(run(spec, prompt, 21), run(sharp("kv-cache"), prompt, 21))
    m = spec.settings.metrics
    # 20 tokens after the first: 4 verifies of 4 drafts (5 tokens each), capped at the end.
    assert spec.settings.counters["spec_drafted"] == 16
    assert m["acceptance_rate_pct"] == 100.0 and m["tokens_per_target_forward"] == 5.0


class Scripted:
    """Drafts the known greedy answer, with the tokens at `wrong` output indices corrupted."""

    def __init__(self, truth: list[int], prompt_len: int, wrong: set[int]) -> None:
        self.truth, self.p, self.wrong = truth, prompt_len, wrong

    def begin(self, prompt: list[int], max_len: int) -> None:
        pass

    def propose(self, context: list[int], k: int) -> list[int]:
        start = len(context) - self.p  # output index of the first drafted token
        return [t + 1 if start + i in self.wrong else t
                for i, t in enumerate(self.truth[start:start + k])]


class StepClock:
    """A Clock that stamps the number of target forwards so far instead of a time."""

    def __init__(self, engine: Any) -> None:
        self.forwards = 0
        self.stamps: list[float] = []
        step = engine.step

        def counted(inp: StepInput) -> torch.Tensor:
            self.forwards += 1
            return step(inp)

        engine.step = counted

    def start(self) -> None:
        self.stamps = []

    def stamp(self) -> None:
        self.stamps.append(self.forwards)

    def finish(self) -> list[float]:
        return list(self.stamps)


def test_acceptance_and_stamps_by_hand() -> None:
    engine = sharp("kv-cache")
    prompt = prompts()[0]
    truth = run(engine, prompt, 10)[0].tolist()
    clock = StepClock(engine)
    with engine.context():
        out = speculative_generate(engine, prompt, 10, clock, Scripted(truth, 12, {3}), k=4)
    assert out.tokens[0].tolist() == truth
    # Prefill: token 0. Verify 1: drafts 1-4, 3 is wrong: accept 1, 2, then the target's 3.
    # Verify 2: drafts 4-7 all right, plus the target's 8. Verify 3: one token left, no draft.
    assert out.stamps_s == [1, 2, 2, 2, 3, 3, 3, 3, 3, 4]
    c = engine.settings.counters
    assert (c["spec_drafted"], c["spec_accepted"], c["spec_target_forwards"]) == (8, 6, 3)


@pytest.mark.parametrize("cache", ["kv-cache", "static-cache"])
def test_rollback_leaves_the_accepted_context(cache: str) -> None:
    engine = sharp(cache)
    prompt = prompts()[0]  # [1, 12]
    truth = run(engine, prompt, 4)[0].tolist()
    with engine.context():
        kv_cache = engine.new_cache(1, 32)
        engine.step(StepInput(prompt, torch.arange(12)[None], None, kv_cache, 1))
        # Feed truth[0] with drafts truth[1], a wrong token, truth[3]: one accepted.
        new, kv_cache = verify(engine, kv_cache, 12, truth[0], [truth[1], truth[2] + 1, truth[3]])
        assert new == truth[1:3]
        assert kv_cache.get_seq_length() == 12 + 2  # prompt, truth[0], truth[1]
        # The kept slots are what a plain prefill of that context computes.
        ref = engine.new_cache(1, 32)
        ctx = torch.cat([prompt, torch.tensor([truth[:2]])], dim=1)
        engine.step(StepInput(ctx, torch.arange(14)[None], None, ref, 1))
        for (k, v), (rk, rv) in zip(engine.kv(kv_cache, 14), engine.kv(ref, 14)):
            torch.testing.assert_close(k, rk)
            torch.testing.assert_close(v, rv)


def test_prompt_lookup_by_hand() -> None:
    draft = PromptLookup(ngram=3)
    # Suffix "7 8 9" occurred at the start: propose what followed it.
    assert draft.propose([7, 8, 9, 1, 2, 3, 4, 7, 8, 9], 3) == [1, 2, 3]
    # Longest n first: "2 5" (n=2) beats the more recent "5" (n=1).
    assert draft.propose([2, 5, 6, 6, 5, 9, 2, 5], 2) == [6, 6]
    # The most recent occurrence wins, and its continuation is copied k long.
    assert draft.propose([1, 2, 3, 1, 2, 4, 1, 2], 3) == [4, 1, 2]
    # Copying past the end of the context repeats the loop it found.
    assert draft.propose([5, 1, 2, 1, 2], 4) == [1, 2, 1, 2]
    assert draft.propose([5, 1, 1, 1], 3) == [1, 1, 1]
    assert draft.propose([1, 2, 3], 4) == [] and draft.propose([4], 2) == []
    # min_ngram=2: a single-token match drafts nothing.
    assert PromptLookup(ngram=3, min_ngram=2).propose([1, 2, 3, 1, 2, 4, 2], 2) == []
    assert PromptLookup(ngram=3, min_ngram=2).propose([1, 2, 3, 1, 2], 2) == [3, 1]


def test_prompt_lookup_accepts_most_drafts_on_repetitive_text() -> None:
    # The default-init tiny model's greedy output falls into a loop: text that repeats itself,
    # what prompt lookup is for (quoting, editing, extraction).
    x = torch.randint(3, 512, (1, 12), generator=torch.Generator().manual_seed(0))
    prompt = torch.cat([x, x, x], dim=1)
    spec = load_engine("kv-cache+spec-lookup[k=4]")
    assert torch.equal(run(spec, prompt, 33), run(load_engine("kv-cache"), prompt, 33))
    m = spec.settings.metrics
    assert m["acceptance_rate_pct"] >= 75 and m["tokens_per_target_forward"] >= 3


@pytest.mark.parametrize("draft", DRAFTS)
def test_counters_are_consistent(draft: str, student_dir: str) -> None:
    k = 4
    variant = f"kv-cache+{draft}".replace("spec-student", f"spec-student[path={student_dir}]")
    spec = sharp(variant.replace("]", f",k={k}]") if "[" in variant else f"{variant}[k={k}]")
    for prompt in prompts():
        run(spec, prompt, 17)
    c, m = spec.settings.counters, spec.settings.metrics
    assert 0 <= c["spec_accepted"] <= c["spec_drafted"] <= k * c["spec_target_forwards"]
    assert 1 <= m["tokens_per_target_forward"] <= k + 1
    assert m["draft_time_pct"] + m["verify_time_pct"] <= 100.0
    if c["spec_drafted"]:
        assert 0 <= m["acceptance_rate_pct"] <= 100


def test_self_draft_shares_the_targets_weights() -> None:
    model = load_engine("kv-cache").model
    view = first_layers(model, 1)
    assert len(model.model.layers) == 2 and model.config.num_hidden_layers == 2
    assert len(view.model.layers) == 1 and view.config.num_hidden_layers == 1
    ptrs = {p.data_ptr() for p in model.parameters()}
    assert {p.data_ptr() for p in view.parameters()} <= ptrs
    assert view.lm_head is model.lm_head and view.model.norm is model.model.norm
    with pytest.raises(ValueError, match="the target has 2 decoder layers"):
        first_layers(model, 3)


def test_student_without_a_cached_student_is_skipped_with_the_reason() -> None:
    assert build_stack("kv-cache+spec-student", "cpu").unavailable == (
        "spec-student: no distilled student cached; run `infer-opt distill`")
    reason = build_stack("kv-cache+spec-student[path=/no/such/dir]", "cpu").unavailable
    assert reason is not None and reason.startswith("spec-student: draft model: ")


def test_ort_prompt_lookup_equals_plain_ort() -> None:
    pytest.importorskip("onnxruntime")
    x = torch.randint(3, 512, (1, 12), generator=torch.Generator().manual_seed(0))
    prompt = torch.cat([x, x[:, :8]], dim=1)
    spec = load_engine("ort+spec-lookup[k=4]")
    assert torch.equal(run(spec, prompt, 20), run(load_engine("ort"), prompt, 20))
    assert spec.settings.metrics["acceptance_rate_pct"] > 50
    # A rejection goes through ort's crop (the base Engine's, via kv / cache_from_kv).
    truth = run(spec, prompt, 3)[0].tolist()
    with spec.context():
        cache = spec.new_cache(1, 32)
        spec.step(StepInput(prompt, torch.arange(20)[None], None, cache, 1))
        new, cache = verify(spec, cache, 20, truth[0], [truth[1], truth[2] + 1, 5])
    assert new == truth[1:3] and spec.kv(cache, 99)[0][0].shape[2] == 20 + 2


# --- what the plan refuses up front -----------------------------------------------------

@pytest.mark.parametrize("variant,needles", [
    ("kv-cache+spec-lookup+spec-self", ("'spec-lookup' and 'spec-self' both set decoder",)),
    ("spec-lookup", ("'spec-lookup' needs kv_cache dynamic or static", "has none")),
    ("kv-cache+spec-lookup[k=0]", ("k must be >= 1",)),
    ("kv-cache+spec-lookup[ngram=2,min_ngram=3]", ("min_ngram=3 is above ngram=2",)),
    ("kv-cache+spec-self[depth=2]", ("unknown parameter 'depth'", "k, layers")),
])
def test_bad_speculative_stacks_are_refused(variant: str, needles: tuple[str, ...]) -> None:
    with pytest.raises(UserError) as err:
        build_stack(variant, "cpu")
    msg = str(err.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg


STATIC = """
model = "tiny-random"
device = "cpu"
threads = 1
[[group]]
variants = ["kv-cache", "kv-cache+spec-lookup[k=4]"]
batch_sizes = [1, 2]
prompt_tokens = 8
new_tokens = 4
"""

ONLINE = """
model = "tiny-random"
device = "cpu"
threads = 1
[[group]]
workload = "online"
variants = ["kv-cache+spec-self[layers=1]"]
policies = ["sequential"]
arrival = "offline"
num_requests = 2
prompt_tokens = 8
new_tokens = 4
"""


@pytest.mark.parametrize("body,needles", [
    (STATIC, ("'spec-lookup' serves batches of at most 1", "batch_size 2")),
    (ONLINE, ("'spec-self'", "replaces whole-sequence generation", "static-batch group")),
])
def test_batches_and_online_groups_are_refused_before_anything_runs(
        tmp_path: Path, body: str, needles: tuple[str, ...]) -> None:
    from infer_opt.run.runner import run_suite

    suite = load_suite(str(write_suite(tmp_path / "s.toml", body)))
    with pytest.raises(UserError) as err:
        run_suite(suite, tmp_path / "results", log=lambda _m: None)
    msg = str(err.value)
    assert "\n" not in msg and not (tmp_path / "results").exists()
    for n in needles:
        assert n in msg, msg


# --- one tiny run end to end ------------------------------------------------------------

RUN = """
model = "tiny-random"
device = "cpu"
threads = 1
timeout_s = 120
reference = "kv-cache"
[[group]]
variants = ["kv-cache", "kv-cache+spec-lookup[k=4]", "kv-cache+spec-self[layers=1,k=2]"]
batch_sizes = [1]
prompt_tokens = 16
new_tokens = 12
min_repeats = 2
max_repeats = 2
warmup_runs = 1
warmup_new_tokens = 3
"""


def test_tiny_suite_rows_carry_the_speculative_columns(tmp_path: Path) -> None:
    from infer_opt.results.table import render
    from infer_opt.run.runner import run_suite

    suite = load_suite(str(write_suite(tmp_path / "s.toml", RUN)))
    csv_path = run_suite(suite, tmp_path / "results", log=lambda _m: None)
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["status"] for r in rows] == ["ok"] * 3, [r["reason"] for r in rows]
    cols = ("acceptance_rate_pct", "tokens_per_target_forward", "draft_time_pct",
            "verify_time_pct")
    assert all(rows[0][c] == "" for c in cols)  # plain decoding fills none of them
    for r in rows[1:]:
        assert 1.0 <= float(r["tokens_per_target_forward"]) <= 5.0
        assert 0.0 < float(r["verify_time_pct"]) <= 100.0
    samples = [json.loads(x) for x in
               csv_path.with_name(csv_path.stem + ".samples.jsonl").read_text().splitlines()]
    assert samples[1]["tokens"] == samples[2]["tokens"] == samples[0]["tokens"]
    text = flat(render(csv_path, reference="kv-cache"))
    assert "12/12" in text  # greedy = ref
    section = text.split("## Speculative decoding")[1].split("## Plugin metrics")[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("| kv-cache+spec-")]
    assert len(lines) == 2 and all(ln.endswith("x | 12/12 |") for ln in lines)  # vs kv-cache


def test_plain_variant_drops_the_speculative_part() -> None:
    from infer_opt.results.speculative_table import plain_variant

    assert plain_variant("kv-cache+sdpa+spec-self[layers=8,k=4]") == "kv-cache+sdpa"
    assert plain_variant("kv-cache+spec-lookup+bf16") == "kv-cache+bf16"
    assert plain_variant("spec-student[path=/a/b-c,k=2]+static-cache") == "static-cache"
