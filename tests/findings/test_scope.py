"""The findings' scope section: the top-4 drop by how the items were drawn, each drop with its interval."""
from __future__ import annotations

from gatescope.findings.report import scope


def _effect(drop: float, low: float, high: float, n: int) -> dict:
    return {"drop": drop, "drop_ci95": [low, high], "baseline": {"n": n}}


def test_the_scope_table_gives_every_drop_its_interval_and_item_count():
    res = {"model": "m.safetensors", "scope": {
        "units": ["rnn.l0.fwd.h:1", "rnn.l0.fwd.h:2"],
        "bundled": _effect(0.84, 0.805, 0.875, 400),
        "random": {"per_condition": 300, "seed": 7, **_effect(0.245, 0.21, 0.28, 600),
                   "by": {"pair": {"held-out": _effect(0.89, 0.838, 0.941, 136),
                                   "training": _effect(0.056, 0.037, 0.08, 464)},
                          "subject": {"boy": {"drop": 0.0}, "girl": {"drop": 0.545}}}}}}
    text = "\n".join(scope({"agreement": [res]}))
    assert "| m | h:1, 2 | 84.0 [80.5, 87.5] (n 400) | 24.5 [21.0, 28.0] (n 600) | 89.0 [83.8, 94.1] (n 136) | " \
           "5.6 [3.7, 8.0] (n 464) |" in text
    assert "(the intervals do not overlap)" in text and "from 0.0 to 54.5 points" in text
    assert "300 per condition, seed 7" in text
    assert scope({"agreement": [{"model": "old.safetensors"}]}) == []  # a findings document from before: no section
