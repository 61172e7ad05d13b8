"""The share-out of a fit's budget by measured costs (odeformer/search/schedule.py): the stages after the
proposals end when the time left is what the later stages are expected to take, not at fixed shares."""

import numpy as np
import pytest

from odeformer.search import Candidate, Problem, Search, schedule
from odeformer.search.local import LocalSearch
from tests.test_local import NAMES, OPS, WRONG_UNARY, Fixed, pendulum

BUDGET = 10.0


def problem() -> Problem:
    t = np.linspace(0, 1, 20)
    return Problem([(t, np.c_[np.exp(-t)])], ["x"], OPS, False, BUDGET)


def cand(score: float, seconds: float) -> Candidate:
    return Candidate(["x"], [], 1.0, 1, score, seconds=seconds)


def test_before_anything_is_timed_the_stages_end_at_fixed_shares():
    p = problem()
    assert schedule.refits_until(p, [], 5) == p.by(schedule.FIXED[0])
    assert schedule.units_until(p, []) == p.by(schedule.FIXED[1])


def test_fast_refits_leave_the_later_stages_only_the_minimum_reserve():
    p = problem()
    fast = [cand(-i, 0.001) for i in range(5)]
    assert schedule.refits_until(p, fast, 5) == pytest.approx(p.deadline - schedule.MIN_RESERVE * BUDGET)
    assert schedule.units_until(p, fast) == pytest.approx(p.deadline - schedule.MIN_RESERVE * BUDGET)
    assert schedule.refits_until(p, fast, 5) > p.by(schedule.FIXED[0])  # later than the fixed share


def test_slower_best_candidates_end_the_refits_early_enough_to_refit_them_again():
    p = problem()
    slower = [cand(-i, 0.05) for i in range(5)]  # five best, 50 ms each
    assert schedule.refits_until(p, slower, 5) == pytest.approx(p.deadline - schedule.LATER_STAGES * 0.25)
    assert schedule.units_until(p, slower) == pytest.approx(p.deadline - schedule.FINAL_STAGE * 0.25)
    assert schedule.refits_until(p, slower, 5) < schedule.units_until(p, slower) < p.deadline


def test_the_stages_never_end_before_their_fixed_shares():
    """Slow junk at the top (seconds a refit) would reserve more than the budget: the fixed shares hold."""
    p = problem()
    slow = [cand(-i, 2.0) for i in range(5)]
    assert schedule.refits_until(p, slow, 5) == p.by(schedule.FIXED[0])
    assert schedule.units_until(p, slow) == p.by(schedule.FIXED[1])


def test_only_the_best_candidates_count():
    """A slow candidate below the best ``top_k`` is not refitted again, so it reserves nothing."""
    p = problem()
    best = [cand(-i, 0.001) for i in range(5)]
    assert schedule.refits_until(p, [*best, cand(-100.0, 30.0)], 5) == schedule.refits_until(p, best, 5)
    assert schedule.refits_until(p, [*best, cand(100.0, 0.3)], 5) < schedule.refits_until(p, best, 5)  # a best one does


def test_every_refitted_candidate_is_timed_and_fast_refits_let_the_climb_run_past_the_fixed_share(monkeypatch):
    """In a fit, each candidate carries the seconds its refit and ranking took, and the climb's end is the
    deadline less the later stages' expected time: with a pendulum's refits (milliseconds), later than the
    fixed 85% of the budget."""
    import odeformer.search.local as local

    ends = []
    original = local.LocalSearch.climb

    def spy(self, problem, candidates, proposals, evaluate, until, max_evaluations=None):
        ends.append((until, problem, list(candidates)))
        return original(self, problem, candidates, proposals, evaluate, until, max_evaluations)

    monkeypatch.setattr(local.LocalSearch, "climb", spy)
    p = Problem(pendulum(noise=0.02, seed=3), NAMES, OPS, False, 60.0)
    cands = Search([Fixed(WRONG_UNARY)], local=LocalSearch()).run(p)
    assert cands and all(c.seconds > 0 for c in cands)
    (until, prob, before), = ends
    assert until == schedule.refits_until(prob, before, 5)
    assert until > p.by(schedule.FIXED[0])
