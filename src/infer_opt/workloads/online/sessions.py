"""Multi-turn sessions: the `sessions` workload kind.

`num_sessions` conversations start at Poisson times (`arrival_rates`, sessions per second);
each has `turns` turns. Turn 1's prompt is `prompt_tokens` of the project's text; turn n + 1 is
sent `think_time_s` after turn n's last token arrived, and its prompt is the whole history
(turn n's prompt + its answer) followed by `question_tokens` of a new question. So the load is
closed-loop: a slower server delays the next turns, as a user waiting for an answer does.

The requests come from a live source (`SessionSource`: the policies' `due` / `open` / `wait`
interface, workloads/online/server.py) that creates turn n + 1 when turn n is done; the same
source drives an engine that serves requests over HTTP (engines/http). Prefix hits: every turn
after the first could skip its history (what a perfect prefix cache skips), estimated and kept
in the samples and notes; a server reporting its cached tokens fills `prefix_cached_tokens`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

from infer_opt.core.errors import UserError
from infer_opt.core.params import Param, check_all
from infer_opt.core.timing import HostClock
from infer_opt.workloads.base import SAMPLING_PARAMS
from infer_opt.workloads.online.arrivals import arrival_times
from infer_opt.workloads.online.measure import OnlineSession, online_row_columns
from infer_opt.workloads.online.prompts import text_prompts
from infer_opt.workloads.online.server import Request
from infer_opt.workloads.online.workload import OnlineWorkload


class SessionSource:
    """Turns as they become due: turn 1 at its session's start, turn n + 1 `think_s` after
    turn n finished."""

    def __init__(self, starts: list[float], first: list[list[int]],
                 questions: list[list[list[int]]], new_tokens: int, think_s: float) -> None:
        self.questions, self.new_tokens, self.think_s = questions, new_tokens, think_s
        self.turns = len(questions[0]) + 1
        self.current: list[Request] = [
            Request(id=s * self.turns, arrival_s=t, prompt=p, new_tokens=new_tokens,
                    prompt_len=len(p)) for s, (t, p) in enumerate(zip(starts, first))]
        self.handed = [False] * len(starts)
        self.all: list[Request] = list(self.current)
        self.history_tokens: list[int] = [0] * len(starts)  # per request in `all`: its history

    def _advance(self) -> None:
        for s, req in enumerate(self.current):
            turn = req.id % self.turns
            if not (self.handed[s] and (req.done or req.error) and turn + 1 < self.turns):
                continue
            if req.error is not None:
                continue  # a failed turn ends its session
            history = list(req.prompt) + list(req.tokens)
            prompt = history + self.questions[s][turn]
            nxt = Request(id=req.id + 1, arrival_s=req.stamps_s[-1] + self.think_s,
                          prompt=prompt, new_tokens=self.new_tokens, prompt_len=len(prompt))
            self.current[s], self.handed[s] = nxt, False
            self.all.append(nxt)
            self.history_tokens.append(len(history))

    def due(self, now: float) -> list[Request]:
        self._advance()
        out = []
        for s, req in enumerate(self.current):
            if not self.handed[s] and req.arrival_s <= now:
                self.handed[s] = True
                out.append(req)
        return sorted(out, key=lambda r: (r.arrival_s, r.id))

    def next_arrival_s(self) -> float | None:
        self._advance()
        times = [r.arrival_s for s, r in enumerate(self.current) if not self.handed[s]]
        return min(times) if times else None

    @property
    def open(self) -> bool:
        self._advance()
        return any(not h for h in self.handed)

    def wait(self, clock: HostClock, until_s: float | None = None) -> None:
        nxt = self.next_arrival_s()
        t = until_s if nxt is None else (nxt if until_s is None else min(nxt, until_s))
        if t is not None:
            clock.sleep_until(t)


@dataclass(frozen=True)
class SessionsWorkload(OnlineWorkload):
    """Multi-turn conversations served by `policy` (module docstring)."""

    num_sessions: int = 4
    turns: int = 3
    think_time_s: float = 0.5
    question_tokens: int = 16
    kind: str = "sessions"
    SESSION_PARAMS: ClassVar[tuple[Param, ...]] = (
        Param("num_sessions", int, 4, "conversations per timed run", minimum=1),
        Param("turns", int, 3, "requests per conversation", minimum=1),
        Param("think_time_s", float, 0.5, "pause between an answer and the next question",
              minimum=0.0),
        Param("question_tokens", int, 16, "tokens of each follow-up question", minimum=1),
    )
    FROM_ONLINE: ClassVar[frozenset[str]] = frozenset({
        "policies", "arrival_rates", "prompt_tokens", "new_tokens", "max_batch_size",
        "max_wait_ms", "ttft_slo_ms", "tpot_slo_ms", "e2e_slo_ms", "slo_target_pct",
        "warmup_requests", *(p.name for p in SAMPLING_PARAMS)})
    params: ClassVar[tuple[Param, ...]] = (*OnlineWorkload.params, *SESSION_PARAMS)

    @classmethod
    def group_params(cls) -> tuple[Param, ...]:
        return (*(p for p in OnlineWorkload.group_params() if p.name in cls.FROM_ONLINE),
                *cls.SESSION_PARAMS)

    def validate(self, max_context: int | None = None) -> None:
        super().validate(None)
        top = self.prompt_tokens + self.turns * self.new_tokens + \
            (self.turns - 1) * self.question_tokens
        if max_context is not None and top > max_context:
            raise UserError("workload.turns", f"the last turn ({top} tokens) exceeds the model's "
                                              f"context of {max_context} tokens")

    @classmethod
    def from_group(cls, group: dict[str, Any]) -> list[SessionsWorkload]:
        """One workload per policy x session rate; num_requests = sessions x turns."""
        online = {p.name for p in OnlineWorkload.group_params()}
        base = OnlineWorkload.from_group({k: v for k, v in group.items() if k in online})
        extra = check_all(cls.SESSION_PARAMS, {k: v for k, v in group.items()
                                               if k not in online}, "workload", what="key")
        out = []
        for w in base:
            s = cls(**{**{f.name: getattr(w, f.name) for f in fields(OnlineWorkload)
                          if f.name != "kind"}, **extra})
            s.validate()
            out.append(replace(s, num_requests=s.num_sessions * s.turns))
        return out

    def session(self, ctx: Any) -> Any:
        return MultiTurnSession(self, ctx)

    def skip_reason(self, settings: Any) -> str | None:
        return None

    def row_columns(self) -> dict[str, Any]:
        cols = online_row_columns(self)
        # An online load (tables, plots, compare); the arrival column names the sessions.
        cols.update(workload="online",
                    arrival=f"sessions x{self.turns} turns, think {self.think_time_s:g} s")
        return cols


class MultiTurnSession(OnlineSession):
    """The online session, its requests from a fresh `SessionSource` every run."""

    def __init__(self, w: SessionsWorkload, ctx: Any) -> None:
        super().__init__(w, ctx)
        self.template = []
        seed = ctx.cell.seed
        vocab, tok = ctx.ref.vocab_size, ctx.tokenizer
        self.starts = arrival_times(w.num_sessions, "poisson", w.arrival_rate_per_s, 1.0, seed)
        self.first = text_prompts([w.prompt_tokens] * w.num_sessions, vocab, tok, seed)
        # Questions: windows of the text (seeded ids without a tokenizer), distinct per turn.
        rng = random.Random(f"questions-{seed}")
        qs = text_prompts([w.question_tokens] * (w.num_sessions * (w.turns - 1)), vocab, tok,
                          seed + 1 + rng.randrange(1000))
        self.questions = [qs[s * (w.turns - 1):(s + 1) * (w.turns - 1)]
                          for s in range(w.num_sessions)]
        self.history: list[int] = []

    def _source(self, warm: bool = False) -> SessionSource:
        w = self.w
        if warm:  # untimed: two short sessions of two turns, starting at once
            n = min(2, w.num_sessions)
            return SessionSource([0.0] * n, self.first[:n],
                                 [q[:1] for q in self.questions[:n]], 4, 0.0)
        return SessionSource(self.starts, self.first, self.questions, w.new_tokens,
                             w.think_time_s)

    def warm_up(self) -> None:
        if self.w.warmup_requests and self.w.turns > 1:
            with self.engine.context():
                src = self._source(warm=True)
                self.serve(self.engine, src, HostClock(), self.w, None)
        self.ctx.settings.counters.clear()

    def run_once(self, round_index: int) -> float:
        src = self._source()
        with self.engine.context():
            clock = HostClock()
            clock.start()
            stats = self.serve(self.engine, src, clock, self.w, None)
        reqs = sorted(src.all, key=lambda r: r.id)
        self.history = [h for _, h in sorted(zip([r.id for r in src.all], src.history_tokens))]
        self.runs.append(reqs)
        self.steps.append(stats.step_batch_sizes)
        self.rounds.append(round_index)
        ok = [r for r in reqs if r.error is None and r.stamps_s]
        if not ok:
            raise RuntimeError(f"all {len(reqs)} requests failed: {reqs[0].error}")
        tpot = [(r.stamps_s[-1] - r.stamps_s[0]) * 1e3 / (len(r.stamps_s) - 1)
                for r in ok if len(r.stamps_s) > 1]
        return sum(tpot) / len(tpot) if tpot else 0.0

    def finish(self, row: dict[str, Any], samples: dict[str, Any]) -> None:
        super().finish(row, samples)
        total = sum(r.prompt_len for r in self.runs[-1])
        pct = 100.0 * sum(self.history) / total if total else 0.0
        self.ctx.settings.notes.append(f"sessions: estimated prefix hits {pct:.1f}% of prompt "
                                       "tokens (each turn's history; what a perfect prefix "
                                       "cache could skip)")
        samples["sessions"] = {"history_tokens_est": self.history, "prefix_hit_pct_est": pct}
