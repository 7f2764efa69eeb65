"""Multi-turn sessions (workloads/online/sessions.py): turn n + 1 = history + a new question,
sent a think time after turn n's answer; served by every policy through the live source."""

from __future__ import annotations

import pytest

from infer_opt.core.errors import UserError
from infer_opt.workloads.online.sessions import SessionSource, SessionsWorkload

from .test_serving import sharp_backend, unbatched  # noqa: F401  (fixture reused)


@pytest.mark.parametrize("policy", ["sequential", "dynamic", "continuous"])
def test_turns_carry_their_history_for_every_policy(sharp_backend, policy: str) -> None:  # noqa: F811
    from infer_opt.core import registry
    from infer_opt.workloads.online.server import HostClock

    w = SessionsWorkload(policy=policy, max_batch_size=3, max_wait_ms=5.0)
    first = [[5, 9, 2, 7], [4, 4, 6], [11, 3, 5, 9, 2]]
    questions = [[[8, 8], [9]], [[3], [1, 2, 3]], [[7, 7, 7], [6]]]
    src = SessionSource([0.0, 0.01, 0.02], first, questions, new_tokens=3, think_s=0.02)
    with sharp_backend.context():
        registry.load("policy", policy)(sharp_backend, src, HostClock(), w, None)
    reqs = {r.id: r for r in src.all}
    assert len(reqs) == 9 and all(r.done for r in reqs.values())
    for s in range(3):
        for turn in range(3):
            r = reqs[s * 3 + turn]
            assert r.tokens == unbatched(sharp_backend, r.prompt, 3)
            if turn:
                prev = reqs[s * 3 + turn - 1]
                assert r.prompt == prev.prompt + prev.tokens + questions[s][turn - 1]
                assert r.arrival_s == pytest.approx(prev.stamps_s[-1] + 0.02)
                assert r.admitted_s >= r.arrival_s


def test_sessions_group_and_errors() -> None:
    (w,) = SessionsWorkload.from_group({"policies": ["continuous"], "num_sessions": 3,
                                        "turns": 4, "arrival_rates": [2.0]})
    assert w.num_requests == 12 and w.kind == "sessions"
    assert w.row_columns()["arrival"].startswith("sessions x4 turns")
    with pytest.raises(UserError, match="turns"):
        SessionsWorkload.from_group({"turns": 0})
    with pytest.raises(UserError, match="context"):
        SessionsWorkload(turns=20, new_tokens=32).validate(max_context=256)
