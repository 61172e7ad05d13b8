"""The search: proposals from every source -> constants refitted on the fitting points (the held-out
fifth unseen) -> ranked by the criterion (ranking.py) -> the best also tried without negligible terms
and improved by local search (local.py) -> the best tried with unit coefficients (units.py) -> the
winners refitted on all points.

The time budget is a cap, not a schedule: each stage ends when its work is done, and what it leaves
passes to the next. Decoding stops at 40% of the budget and library regressions at 60%; from the first
refit on, the share-out follows the costs measured in the fit (schedule.py): refitting proposals and
the local search end when the time left is what the unit step and the final refits of the best
candidates are expected to take, the unit step when the final refits' is left, neither before the
fixed 85% and 92% of the budget. One proposal's refit may take 10% of the budget. The local search
ends when the criterion stops improving (later while no candidate reproduces the data to R² 0.9),
and one of its edits may take 3% of the budget (at least 0.2 s) to refit; a budget beyond 10 s buys
proportionally more refitted proposals and a longer, wider climb.
Where the first refitted candidate and the first proposals all miss the whole trajectories and one of
them reproduces windows of them (chaos), the proposals are refitted and ranked again over windows
(windows.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np

from data_gen.simplify import key as skeleton_key
from data_gen.simplify import simplify
from odeformer.search.candidate import Candidate, distinct, evaluate_fit, mark_pareto, observed_r2
from odeformer.search.local import LocalSearch
from odeformer.search.problem import Problem
from odeformer.search.proposal import Proposal, best_of_each_first
from odeformer.search.prune import CONSTANT_SPREADS, PRUNE_SHARES, fold_constant_parts, prune_small_terms
from odeformer.search.ranking import MARGIN_NATS
from odeformer.search.refit import Fit, refit, trajectory_r2
from odeformer.search.schedule import refits_until, units_until
from odeformer.search.units import UNIT_TOLERANCES, unit_coefficients
from odeformer.search.windows import CHECK_AFTER, TRACKERS, window_points, windowed

#: share of the budget (and at least EDIT_FLOOR_S) one edit of the local search may take to refit: an edit
#: that needs the stiff integrator for longer is a miss (a junk component of 8 terms with exponentials
#: took 1.5 s a refit on a noisy exponential decay, most of that fit's 6 s)
EDIT_SHARE = 0.03
EDIT_FLOOR_S = 0.2
#: share of the budget one proposal's refit may take: uncapped, a junk proposal with stiff saturating
#: terms takes 4 s of a noisy Lotka-Volterra fit's 10, ahead of the law
PROPOSAL_SHARE = 0.1
#: library proposals refitted at most (each refit ~10-100 ms); the transformer's come after them. On
#: noisy data the priors that order them are less sure (Lotka-Volterra at 5% noise with half the points
#: dropped was the 13th), so more are refitted there
MAX_LIBRARY_REFITS = 8
MAX_NOISY_LIBRARY_REFITS = 24


def _as_is(components, constants, problem: Problem, deadline: float = np.inf) -> Fit:
    """A proposal with its constants as they are (no refit)."""
    return Fit(tuple(components), np.asarray(constants, dtype=np.float64),
               trajectory_r2(components, constants, problem.fit_data, deadline))


def _evaluated(problem: Problem, fit: Fit, source: str, since: float) -> Candidate | None:
    """The candidate of a fit that integrates (None for one that does not), timed from ``since`` (its
    refit's start) for the schedule."""
    cand = evaluate_fit(problem, fit, source) if np.isfinite(fit.r2) else None
    if cand is not None:
        cand.seconds = time.monotonic() - since
    return cand


class ProposalSource(Protocol):
    name: str

    def propose(self, problem: Problem, earlier: list[Proposal]) -> list[Proposal]: ...


class Search:
    """Runs the sources in order (later ones see earlier proposals), refits, ranks; see the module doc."""

    def __init__(self, sources: Sequence[ProposalSource], refit: bool = True, top_k: int = 5,
                 local: LocalSearch | None = None, max_evaluations: int | None = None):
        self.sources = list(sources)
        self.refit = refit  # off: rank the proposals' constants as they are (the ablation)
        self.top_k = top_k
        self.local = local  # None: no local search
        #: trajectory refits the local search may spend (None: only the clock limits it); deterministic
        self.max_evaluations = max_evaluations

    def propose(self, problem: Problem) -> list[Proposal]:
        """Every source's proposals that the allowed operators can write, each skeleton once; the
        library sources' first (cheap, often right), the most promising first, then the transformer's."""
        proposals: list[Proposal] = []
        for source in self.sources:  # each watches the clock itself
            proposals += [p for p in source.propose(problem, proposals) if p.uses_only(problem.operators)]
        # the best of each source first (they fail differently), then the rest, each by its prior
        limit = MAX_LIBRARY_REFITS if problem.clean else MAX_NOISY_LIBRARY_REFITS
        limit = round(limit * problem.budget_scale)  # a larger budget refits more
        ordered = best_of_each_first([p for p in proposals if p.prior is not None], lambda p: p.source,
                                     lambda p: p.prior)[:limit]
        ordered += [p for p in proposals if p.prior is None]
        out, seen = [], set()
        for p in ordered:
            key = tuple(skeleton_key(simplify(c)) for c in p.components)
            if key not in seen:
                seen.add(key)
                out.append(p)
        return out

    def run(self, problem: Problem, proposals: list[Proposal] | None = None) -> list[Candidate]:
        """The ranked candidates (best first, at most ``top_k``); ``proposals``: these instead of the
        sources' (the windowed run takes the whole trajectories' proposals)."""
        candidates: list[Candidate] = []
        proposals = self.propose(problem) if proposals is None else proposals
        problem.mark("proposals")
        for p in proposals:
            exact = [c for c in candidates if c.exact]
            if exact and len(p.constants) >= min(len(c.fit.constants) for c in exact):
                continue  # it cannot fit better than a candidate at the floor, only cost more
            since, until = time.monotonic(), refits_until(problem, candidates, self.top_k)
            if since > until:
                if candidates:
                    break  # the best answer so far is returned
                # out of time with nothing yet: the proposals as they are, until one integrates
                fit = _as_is(p.components, p.constants, problem)
            else:
                # a linear library proposal's constants are already least squares on the derivatives;
                # inner constants taken from a scanned grid (K, c, w) are tuned on the derivatives first
                fit = self._fit(p.components, p.constants, problem,
                                min(until, since + PROPOSAL_SHARE * problem.time_budget_s),
                                derivative_stage=p.prior is None or p.tuned)
            cand = _evaluated(problem, fit, p.source, since)
            if cand is not None:
                candidates.append(cand)
                # unpredictable data (chaos) are ranked over windows: checked once the first are refitted
                switched = self._on_windows(problem, candidates, proposals) if len(candidates) == CHECK_AFTER else None
                if switched is not None:
                    return switched
        candidates.sort(key=lambda c: -c.score)
        problem.mark("refits")
        candidates += self._pruned(problem, candidates[:3], refits_until(problem, candidates, self.top_k))
        until = refits_until(problem, candidates, self.top_k)
        problem.mark("pruning")
        problem.spent["reserved"] = problem.deadline - until
        # a best candidate at the criterion's floor can only be made simpler, which pruning does; with no
        # time left, the climb's set-up (every proposal through SymPy) is not worth starting
        if (self.local is not None and candidates and self.refit and time.monotonic() < until
                and not max(candidates, key=lambda c: c.score).exact):
            # one edit may not hold up the climb: a stiff one is a miss after its share of the budget
            edit_s = max(EDIT_FLOOR_S, EDIT_SHARE * problem.time_budget_s)

            def evaluate(components, constants, tuned):
                deadline = min(until, time.monotonic() + edit_s)
                return self._candidate(components, constants, problem, deadline, self.local.name, tuned)

            candidates += self.local.climb(problem, candidates, proposals, evaluate, until, self.max_evaluations)
            problem.mark("climb")
        candidates.sort(key=lambda c: -c.score)
        candidates = distinct(candidates)
        if self.refit:
            candidates += self._with_unit_coefficients(problem, candidates[: self.top_k])
            candidates.sort(key=lambda c: -c.score)
            candidates = distinct(candidates)  # a variant and its original share a form: the better stays
            problem.mark("units")
        candidates = candidates[: self.top_k]
        if self.refit:
            candidates = [self._refit_on_all(problem, c) for c in candidates]
            problem.mark("final")
        mark_pareto(candidates)
        return candidates

    def _on_windows(self, problem: Problem, candidates: list[Candidate],
                    proposals: list[Proposal]) -> list[Candidate] | None:
        """The proposals refitted and ranked again on the trajectories cut into windows, where no candidate
        reproduces the whole trajectories and one reproduces windows (windows.py); None: the search goes
        on as it is."""
        if problem.windows is not None or not self.refit:
            return None
        points = window_points(problem, [c.fit for c in candidates], [c.r2 for c in candidates],
                               [(p.components, p.constants) for p in proposals[:TRACKERS]])
        if points is None:
            return None
        inner = windowed(problem, points)
        found = self.run(inner, proposals)
        if not found:  # out of time on the windows: the whole trajectories' candidates stand
            return None
        problem.spent.update(inner.spent)  # the stages of the windowed run are the fit's
        # r2 (contract 3.2) stays the whole trajectories' re-integrated from their observed first states
        # (the windows share the whole trajectories' normalisation: the same points)
        for cand in found:
            cand.r2 = observed_r2(problem, cand.fit)
        mark_pareto(found)
        return found

    def _fit(self, components, constants, problem: Problem, deadline: float, derivative_stage: bool = True) -> Fit:
        if self.refit:
            return refit(components, constants, problem.fit_data, deadline=deadline,
                         derivatives=problem.derivatives[problem.best_estimator],
                         weights=problem.derivative_weights[problem.best_estimator], derivative_stage=derivative_stage,
                         fit_initial=not problem.clean, point_weights=problem.fit_weights)
        return _as_is(components, constants, problem, deadline)

    def _candidate(self, components, constants, problem: Problem, deadline: float, source: str,
                   derivative_stage: bool = True) -> Candidate | None:
        """A system refitted by ``deadline`` and ranked, timed for the schedule (None if it fails)."""
        since = time.monotonic()
        return _evaluated(problem, self._fit(components, constants, problem, deadline, derivative_stage), source,
                          since)

    def _pruned(self, problem: Problem, best: list[Candidate], until: float) -> list[Candidate]:
        """The best candidates again without their negligible terms (leftovers of noise fitting), and
        with the parts that are constant on the data folded into constants, by the clock time ``until``."""
        out, tried = [], set()
        for cand in best:
            for smaller in _smaller(cand.fit, problem):
                if time.monotonic() > until:
                    break
                if smaller is None or smaller[0] in tried:
                    continue
                tried.add(smaller[0])
                new = self._candidate(*smaller, problem, until, cand.source)
                if new is not None:
                    out.append(new)
        return out

    def _with_unit_coefficients(self, problem: Problem, best: list[Candidate]) -> list[Candidate]:
        """The best candidates with their near-unit coefficients fixed (units.py), each kept where it scores
        higher than its original; on noisy data by the evidence margin, as a local search edit must, so
        that an approximant's coefficient of 0.93 does not become 1 for the five nats a constant saves (on
        clean data a coefficient fixed wrongly costs hundreds)."""
        out, until = [], units_until(problem, best)
        margin = 0.0 if problem.clean else MARGIN_NATS
        for cand in best:
            tried = set()
            for tol in UNIT_TOLERANCES:
                if time.monotonic() > until:
                    return out
                variant = unit_coefficients(cand.fit.components, cand.fit.constants, problem.norm, tol,
                                            problem.operators)
                if variant is None or variant[0] in tried:
                    continue
                tried.add(variant[0])
                new = self._candidate(*variant, problem, until, cand.source, derivative_stage=False)
                if new is not None and new.score > cand.score + margin:
                    out.append(new)
        return out

    def _refit_on_all(self, problem: Problem, cand: Candidate) -> Candidate:
        """The candidate's constants refitted on all points, held-out ones included; its rank stays."""
        if problem.expired():
            return cand
        since = time.monotonic()
        fit = refit(cand.fit.components, cand.fit.constants, problem.ndata, deadline=problem.deadline,
                    fit_initial=not problem.clean, point_weights=problem.point_weights)
        new = _evaluated(problem, fit, cand.source, since)
        if new is None or new.r2 < cand.r2:
            return cand
        new.score = cand.score
        return new


def _smaller(fit: Fit, problem: Problem) -> Iterator[tuple[tuple, list[float]] | None]:
    """The edits of ``prune.py`` on a fitted candidate, one at a time (None where an edit changes nothing)."""
    for rel in PRUNE_SHARES:
        yield prune_small_terms(fit.components, fit.constants, problem.fit_points, rel)
    for rel in CONSTANT_SPREADS:
        yield fold_constant_parts(fit.components, fit.constants, problem.fit_points, rel)
