"""How one fit's time budget is shared out between the stages after the proposals: by the costs
measured in that fit, within fixed bounds.

Every refit-and-rank of a candidate is timed (``Candidate.seconds``). Refitting proposals, pruning and
the local search end when the time left is what the stages after them are expected to take: the unit
coefficients (``units.py``) and the final refits on all points each refit the best candidates once
more, so the reserve is ``LATER_STAGES`` times the best five candidates' own refit seconds. The unit
step in turn leaves ``FINAL_STAGE`` times them for the final refits. A fit whose refits take
milliseconds refits and climbs until just before the deadline. The stages never end earlier than at
the fixed shares ``FIXED`` of the budget: where the best candidates are slow junk (stiff saturating
terms, seconds a refit), their own refit times overstate what refitting them again takes, and
cutting the proposals' refits short for them lost clean Rössler (ODEBench 58) its law. Until the first
candidate is timed, the stages end at those shares. Generating proposals keeps its own caps (decoding
by 40% of the budget, library regressions by 60%): its later stages' costs are not known while it
runs. ``python bench/stages.py`` shows when each stage ends and how the reserve compares with what the
later stages take."""

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
#: refits and the climb end no earlier than this share of the budget, the unit step no earlier than the
#: second (and there, before any candidate is timed)
FIXED = (0.85, 0.92)


def _reserve(problem: Problem, best: Sequence[Candidate], multiple: float) -> float:
    return max(MIN_RESERVE * problem.time_budget_s, multiple * sum(c.seconds for c in best))


def refits_until(problem: Problem, candidates: Sequence[Candidate], top_k: int) -> float:
    """The clock time by which refitting proposals, pruning and the local search end: the deadline less
    what the unit step and the final refits of the ``top_k`` best ``candidates`` are expected to take,
    and no earlier than the fixed share."""
    if not candidates:
        return problem.by(FIXED[0])
    best = sorted(candidates, key=lambda c: -c.score)[:top_k]
    return max(problem.by(FIXED[0]), problem.deadline - _reserve(problem, best, LATER_STAGES))


def units_until(problem: Problem, best: Sequence[Candidate]) -> float:
    """The clock time by which the unit step ends: the deadline less what the final refits of ``best``
    are expected to take, and no earlier than the fixed share."""
    if not best:
        return problem.by(FIXED[1])
    return max(problem.by(FIXED[1]), problem.deadline - _reserve(problem, best, FINAL_STAGE))
