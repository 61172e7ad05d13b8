"""How one fit's time budget is shared out between the stages after the proposals: by the costs
measured in that fit, not by fixed fractions.

Every refit-and-rank of a candidate is timed (``Candidate.seconds``). Refitting proposals, pruning and
the local search end when the time left is what the stages after them are expected to take: the unit
coefficients (``units.py``) and the final refits on all points each refit the best candidates once
more, and over quick ODEBench (both settings, 42 fits) the two together took 0.6 to 5 times the best
five candidates' own refits (median 2.1), so the reserve is ``LATER_STAGES`` times those. The unit step
in turn leaves ``FINAL_STAGE`` times them for the final refits. A fit whose refits take milliseconds
refits and climbs until just before the deadline; one whose best candidates each took half a second
to refit stops early enough for them to be refitted again within the budget. Until the first candidate
is timed, nothing is known about its costs and the stages end at fixed shares of the budget.
Generating proposals keeps its own caps (decoding by 40% of the budget, library regressions by 60%):
its later stages' costs are not known while it runs."""

from __future__ import annotations

from collections.abc import Sequence

from odeformer.search.candidate import Candidate
from odeformer.search.problem import Problem

#: the unit step and the final refits, in multiples of the best candidates' own refit seconds
LATER_STAGES = 3.0
#: the final refits alone (a quarter more points, from constants already fitted)
FINAL_STAGE = 1.5
#: a stage ends at least this share of the budget before the deadline: writing the answer in the
#: user's units and ranking it take time of their own
MIN_RESERVE = 0.02
#: before any candidate is timed: refits and the climb end by this share of the budget, the unit step
#: by the second
UNTIMED = (0.85, 0.92)


def _reserve(problem: Problem, best: Sequence[Candidate], multiple: float) -> float:
    return max(MIN_RESERVE * problem.time_budget_s, multiple * sum(c.seconds for c in best))


def refits_until(problem: Problem, candidates: Sequence[Candidate], top_k: int) -> float:
    """The clock time by which refitting proposals, pruning and the local search end: the deadline less
    what the unit step and the final refits of the ``top_k`` best ``candidates`` are expected to take."""
    if not candidates:
        return problem.by(UNTIMED[0])
    best = sorted(candidates, key=lambda c: -c.score)[:top_k]
    return problem.deadline - _reserve(problem, best, LATER_STAGES)


def units_until(problem: Problem, best: Sequence[Candidate]) -> float:
    """The clock time by which the unit step ends: the deadline less what the final refits of ``best``
    are expected to take."""
    if not best:
        return problem.by(UNTIMED[1])
    return problem.deadline - _reserve(problem, best, FINAL_STAGE)
