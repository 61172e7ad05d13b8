"""Local search around the best candidates: edits of one component at a time, screened by a cheap
linear fit (``linear.py``; on noisy data along the current candidate's simulated trajectory), the most
promising refitted on the trajectories (each skeleton once per climb) and ranked by the criterion.
It climbs while the criterion improves (anytime: the best so far is always ranked), from each of the
best few candidates in turn.

The edits of a component (its additive terms, each without its coefficient):

- drop a term; add a term from the libraries (polynomial, the grammar's unary terms) or from any
  proposal (the transformer's, the saturating and forcing sources');
- rewrite a term at one node: a unary operator swapped for another (``cos`` -> ``sin``), a variable
  replaced by a motif (``x -> x/(K + x)``, ``sin(x)``, ``exp(c*x)``, ``x*y``) or by another variable,
  a power of one variable by a saturation (``x**2 -> x**2/(K + x**2)``, a Hill function);
- replace the whole component by the same component of another proposal (proposals mixed across
  components) or, on noisy data, by a support of its sparse path along the current candidate's
  trajectory; and every component's best edit at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from data_gen.expressions import (
    CONST,
    UNARY_OPS,
    Tree,
    is_var,
    n_constants,
    operators,
    split_constants,
    var_name,
    variables_used,
)
from odeformer.search.candidate import LOW_CONFIDENCE_R2, Candidate
from odeformer.search.library import Term, grammar_terms, sum_tree
from odeformer.search.linear import LinearFits, component_terms
from odeformer.search.problem import Problem
from odeformer.search.proposal import Proposal
from odeformer.search.prune import expanded
from odeformer.search.ranking import MARGIN_NATS
from odeformer.search.refit import simulate
from odeformer.search.regression import component_path

#: unary operators a swap may put in place of another (``neg`` is a sign; ``abs`` makes kinks that
#: imitate noise)
SWAPPABLE = tuple(op for op in UNARY_OPS if op not in ("neg", "abs"))
#: operators through which a variable may still become a motif: a motif inside a transcendental function
#: (``tanh(exp(c*x))``) is an approximant's trick, not a law's shape
ARITHMETIC = ("add", "sub", "mul", "div")
#: operators of a subterm of one variable that may become a saturation (a power or a ratio: a Hill
#: function; a motif around a sine is no law's shape)
POWERS = {*ARITHMETIC, "neg", "pow2", "pow3", "inv"}
#: a component with more terms than this is not grown further
MAX_TERMS = 10
#: terms at most in a support of the sparse paths along a candidate's trajectory (noisy data)
PATH_TERMS = 4
#: a candidate's trajectories must reproduce the data to this R² for the climb to screen along them
ALONG_R2 = 0.5

#: starts at most, however large the budget (``Problem.budget_scale`` scales ``starts`` and ``patience``:
#: 30 s climbs from three times as many starts, three times as patiently)
MAX_STARTS = 9
#: while the best candidate reproduces less than this share of the data's variance (the answer's
#: ``low_confidence`` threshold), the climb is as wide and patient as at ``POOR_SCALE`` times the
#: reference budget: stopping early is for answers that explain the data, and an answer that does not
#: is worth the rest of the budget (noisy Rössler, ODEBench 58, keeps climbing through its 10 s)
POOR_R2 = LOW_CONFIDENCE_R2
POOR_SCALE = 3.0

if TYPE_CHECKING:  # the transformer's module needs torch; the climb does not
    from odeformer.search.transformer import TransformerPrior

Components = tuple[tuple[Term | None, ...], ...]


@dataclass
class Edit:
    components: Components
    tuned: bool  # it holds inner constants set by a motif, to be tuned before the trajectory fit


class Motifs:
    """What a variable may become (a saturation, a sine or cosine, an exponential, a product with a
    variable, another variable), and what a power of one variable without constants may become (a
    saturation: ``x**2 -> x**2/(K + x**2)``, a Hill function). Inner constants are scaled to the values
    on the data; a subterm's options are worked out on first use."""

    def __init__(self, problem: Problem):
        self.t, self.x = problem.fit_points
        self.dim = problem.dim
        self._options: dict = {}

    def get(self, tree: Tree, default=()) -> list[tuple[Tree, tuple[float, ...]]]:
        if tree not in self._options:
            self._options[tree] = self._of(tree)
        return self._options[tree]

    def _of(self, tree: Tree) -> list[tuple[Tree, tuple[float, ...]]]:
        var = isinstance(tree, str) and is_var(tree)
        if not var and (isinstance(tree, str) or n_constants(tree) or len(variables_used(tree)) != 1
                        or not operators(tree) <= POWERS):
            return []
        values = Term(tree).column(self.x, self.t)
        if not np.all(np.isfinite(values)):
            return []
        mid = float(np.median(np.abs(values))) or 1.0
        options: list[tuple[Tree, tuple[float, ...]]] = []
        if values.min() > 0:
            options.append((("div", tree, ("add", CONST, tree)), (mid,)))
        if not var:
            return options
        spread = float(np.ptp(values)) or mid
        options += [(("sin", tree), ()), (("cos", tree), ())]
        options += [(("exp", ("mul", CONST, tree)), (s / spread,)) for s in (1.0, -1.0)]
        options += [(("mul", tree, var_name(k)), ()) for k in range(self.dim)]
        options += [(var_name(k), ()) for k in range(self.dim) if var_name(k) != tree]
        return options


def rewrites(tree: Tree, consts: tuple[float, ...], ops: set[str],
             motif: Motifs | dict) -> list[tuple[Tree, tuple, bool]]:
    """Every tree that differs from ``tree`` at one node or one subterm (see the module doc), with its
    constants and whether a motif brought new inner constants."""
    out = [(m, c, bool(c)) for m, c in motif.get(tree, []) if operators(m) <= ops]
    if isinstance(tree, str):
        return out
    if tree[0] in SWAPPABLE:
        out += [((u, tree[1]), consts, False) for u in SWAPPABLE if u != tree[0] and u in ops]
    start = 0
    for ci, child in enumerate(tree[1:]):
        k = n_constants(child)
        inner = motif if tree[0] in ARITHMETIC else {}
        for new, new_c, tuned in rewrites(child, consts[start:start + k], ops, inner):
            out.append(((*tree[:ci + 1], new, *tree[ci + 2:]), consts[:start] + new_c + consts[start + k:], tuned))
        start += k
    return out


def canonical(terms) -> tuple[Term | None, ...]:
    """A component's terms in a fixed order, so that one sum is one edit however it was reached."""
    return tuple(sorted(terms, key=lambda t: "" if t is None else t.key))


def as_terms(components: Sequence[Tree], constants: Sequence[float]) -> Components:
    """A system as additive terms per component (products multiplied out where that separates terms)."""
    return tuple(canonical(component_terms(*expanded(comp, list(cs))))
                 for comp, cs in zip(components, split_constants(components, list(constants))))


class LocalSearch:
    """Hill climbing on the criterion from the best ``starts`` candidates: every edit of the current
    system is screened, and they are refitted on the trajectories in order of promise (components taking
    turns) until one improves the criterion, from which the climb goes on; ``patience`` refits in a row
    without improvement end a start (both scale with ``Problem.budget_scale``, and by ``POOR_SCALE`` at
    least while no candidate reproduces the data to R² ``POOR_R2``). A
    step must improve the criterion by ``margin`` nats: the climb tries many systems, and on noisy data
    the best of many wrong ones beats the law by a few nats by chance (a sine for a line at 5% noise won
    by 3). Only the steps taken are returned."""

    name = "local"

    def __init__(self, starts: int = 3, patience: int = 8, margin: float = MARGIN_NATS,
                 prior: TransformerPrior | None = None, prior_weight: float = 1.0, prior_top: int = 16):
        self.starts, self.patience, self.margin = starts, patience, margin
        #: the transformer's log-probability of an edited skeleton reorders the ``prior_top`` most
        #: promising edits of each component (``prior_weight`` nats per nat); None: the cheap fit alone
        self.prior, self.prior_weight, self.prior_top = prior, prior_weight, prior_top

    def climb(self, problem: Problem, candidates: list[Candidate], proposals: list[Proposal],
              evaluate: Callable[[tuple[Tree, ...], list[float], bool], Candidate | None], until: float,
              max_evaluations: int | None = None) -> list[Candidate]:
        """The candidates the climb stepped to. ``evaluate`` refits a system (components, constants,
        whether inner constants need tuning) on the trajectories and ranks it; the climb stops at the clock
        time ``until``, after ``max_evaluations`` of them, or when no start can be improved."""
        return Climb(self, problem, candidates, proposals, evaluate).run(until, max_evaluations)


class Climb:
    """One problem's climb: its cheap fits, the terms an edit may add, the component pool, the motifs
    and every system tried, shared by its starts."""

    def __init__(self, search: LocalSearch, problem: Problem, candidates: list[Candidate],
                 proposals: list[Proposal], evaluate: Callable[[tuple[Tree, ...], list[float], bool],
                                                               Candidate | None]):
        self.search, self.problem, self.candidates, self.evaluate = search, problem, candidates, evaluate
        self.base_fits = LinearFits(problem)  # the derivative estimates' screen
        # every proposal and candidate as term tuples, once (each goes through SymPy's expand)
        proposed = [as_terms(p.components, p.constants) for p in proposals]
        self.held = [as_terms(c.fit.components, c.fit.constants) for c in candidates]
        self.library = self._library(proposed)
        self.path_terms = [t for t in self.library if not t.consts] + [None]  # the sparse paths' columns
        self.pool = self._alternatives(proposed + self.held)
        self.motif = Motifs(problem)
        self.prior = search.prior.for_problem(problem) if search.prior is not None else None

    def run(self, until: float, max_evaluations: int | None) -> list[Candidate]:
        margin = self.search.margin
        # a climb from a lower start that ends just above the best so far is no evidence against it
        best = max(c.score for c in self.candidates)
        best_r2 = max(c.r2 for c in self.candidates)

        def kept(found: list[Candidate]) -> list[Candidate]:
            return [c for c in found if not best < c.score <= best + margin]

        seen: set = set()
        shapes: set = set()  # the skeletons refitted
        visited: list[Candidate] = []
        count = 0
        scale = self.problem.budget_scale
        if best_r2 < POOR_R2:
            scale = max(scale, POOR_SCALE)
        n_starts, patience = min(round(self.search.starts * scale), MAX_STARTS), round(self.search.patience * scale)
        starts, forms = [], set()
        for cand, terms in sorted(zip(self.candidates, self.held), key=lambda ct: -ct[0].score):
            if len(starts) >= n_starts:
                break
            if terms not in forms:
                forms.add(terms)
                starts.append((cand, terms))
        for cand, current in starts:
            fits = self._screen(cand)
            seen.add(current)
            misses = 0
            edits = self._edits(current, seen, fits)
            while edits and misses < patience:
                if time.monotonic() > until or (max_evaluations is not None and count >= max_evaluations):
                    return kept(visited)
                edit = edits.pop(0)
                if edit.components in seen:
                    continue
                seen.add(edit.components)
                system = _system(fits, edit.components)
                # term tuples that differ only in a motif's starting constant are one skeleton: refitted once
                if system is not None and system[0] in shapes:
                    continue
                count += 1
                if system is not None:
                    shapes.add(system[0])
                new = self.evaluate(*system, edit.tuned) if system is not None else None
                if new is None or new.score <= cand.score + margin:
                    misses += 1
                    continue
                visited.append(new)
                cand, current, misses = new, edit.components, 0  # climb from the better system
                fits = self._screen(cand)
                edits = self._edits(current, seen, fits)
        return kept(visited)

    def _screen(self, cand: Candidate) -> LinearFits:
        """The cheap fits that screen the edits of ``cand``. On noisy data, where the candidate reproduces
        the trajectories (R² at least ``ALONG_R2``), they regress along its own simulated trajectory, and
        each component's sparse path there (up to ``PATH_TERMS`` terms of the library without inner
        constants) joins the pool: smoothing splines of sparse noisy points flatten fast oscillations,
        and their errors in the variables bias every coefficient (Lorenz's ``x' = 5.1 (y - x)`` at 5%
        noise with half the points dropped came out as ``1.5 (y - x)``, that pair of terms 24th of 45 in
        the integral form), where a fitted candidate's states are smooth and consistent with a system.
        Clean data, a candidate far from the data (a pendulum with ``cos`` for ``sin``: R² -1.3) and a
        trajectory that cannot be simulated keep the derivative estimates'."""
        problem = self.problem
        if problem.clean or not cand.fit.r2 >= ALONG_R2:
            return self.base_fits
        fit, parts = cand.fit, []
        for k, ((fine, _, _), (_, x)) in enumerate(zip(problem.integration_grid, problem.fit_data)):
            states = simulate(fit.components, fit.constants, fine, fit.start(k, x[0]), problem.deadline)
            if states is None:
                return self.base_fits
            parts.append(states)
        fits, terms = LinearFits(problem, np.concatenate(parts)), self.path_terms
        for i in range(problem.dim):
            cols = [fits.column(t, i) for t in terms]
            ok = [j for j, c in enumerate(cols) if c is not None]
            if ok:
                path = component_path(np.stack([cols[j] for j in ok], axis=1), fits.targets[:, i], PATH_TERMS)
                self.pool[i] |= {canonical(tuple(terms[ok[j]] for j in m.support)) for m in path}
        return fits

    def _library(self, proposed: list[Components]) -> list[Term]:
        """Terms an edit may add: polynomial and unary terms of the state, and every proposal's terms."""
        problem = self.problem
        degree = 3 if problem.dim <= 2 else 2
        out = {t.key: t for t in grammar_terms(problem.dim, problem.operators, False, degree)}
        for system in proposed:
            for terms in system:
                out.update({t.key: t for t in terms if t is not None})
        return [t for t in out.values() if t.uses_only(problem.operators)]

    def _alternatives(self, systems: list[Components]) -> list[set]:
        """Per component, the term tuples the proposals and candidates hold for it."""
        out: list[set] = [set() for _ in range(self.problem.dim)]
        for system in systems:
            for i, terms in enumerate(system):
                out[i].add(terms)
        return out

    def _edits(self, current: Components, seen: set, fits: LinearFits) -> list[Edit]:
        """Every single-component edit of ``current`` not yet tried, best gain in the cheap ``fits``
        first, and the system with every component's best edit at once."""
        per_component: list[list[tuple[float, tuple, bool]]] = []
        for i, terms in enumerate(current):
            base = fits.fit(terms, i)
            base_bic = base[1] if base is not None else np.inf
            options: dict[tuple, bool] = {}
            for j in range(len(terms)):
                if len(terms) > 1:
                    options.setdefault(canonical(terms[:j] + terms[j + 1:]), False)
                if terms[j] is not None:
                    ops = self.problem.operators
                    for tree, consts, tuned in rewrites(terms[j].tree, terms[j].consts, ops, self.motif):
                        options.setdefault(canonical(terms[:j] + (Term(tree, consts),) + terms[j + 1:]), tuned)
            if len(terms) < MAX_TERMS:
                have = {t.key if t is not None else None for t in terms}
                for extra in [*self.library, None]:
                    if (extra.key if extra is not None else None) not in have:
                        options.setdefault(canonical((*terms, extra)), False)
            for alt in self.pool[i]:
                options.setdefault(alt, False)
            scored = []
            for new, tuned in options.items():
                if new == terms or not new:
                    continue
                fitted = fits.fit(new, i)
                if fitted is not None and np.isfinite(fitted[1]):
                    scored.append((base_bic - fitted[1], new, tuned))
            scored.sort(key=lambda s: -s[0])
            per_component.append(scored)
        if self.prior is not None:
            per_component = self._with_prior(current, per_component, fits)
        # components take turns, each's most promising edits first: the cheap fit's gains are not
        # comparable across components (one is explained to the noise, another barely)
        ranked = sorted(((rank, i, e) for i, scored in enumerate(per_component) for rank, e in enumerate(scored)),
                        key=lambda r: r[:2])
        edits = [Edit(current[:i] + (new,) + current[i + 1:], tuned) for _, i, (_, new, tuned) in ranked]
        tops = [s[0] for s in per_component if s and s[0][0] > 0]
        if len(tops) > 1:  # every component's best edit at once (components decouple in the cheap fit)
            joint = tuple(per_component[i][0][1] if per_component[i] and per_component[i][0][0] > 0 else terms
                          for i, terms in enumerate(current))
            edits.insert(0, Edit(joint, any(t for _, _, t in tops)))
        return [e for e in edits if e.components not in seen]

    def _with_prior(self, current: Components, per_component: list[list], fits: LinearFits) -> list[list]:
        """Each component's most promising edits reordered by their cheap gain plus the transformer's
        log-probability of the edited system over the current one's (in BIC units, twice the nats)."""
        top = self.search.prior_top
        systems = [_system(fits, current)]
        where = []
        for i, scored in enumerate(per_component):
            for k, (_, new, _) in enumerate(scored[:top]):
                system = _system(fits, current[:i] + (new,) + current[i + 1:])
                if system is not None:
                    systems.append(system)
                    where.append((i, k))
        if systems[0] is None:
            return per_component
        logp = self.prior.log_prob(systems)
        bonus = {ik: 2.0 * self.search.prior_weight * (lp - logp[0]) for ik, lp in zip(where, logp[1:])
                 if np.isfinite(lp - logp[0])}
        out = []
        for i, scored in enumerate(per_component):
            head = sorted(((gain + bonus.get((i, k), 0.0), new, tuned) for k, (gain, new, tuned)
                           in enumerate(scored[:top])), key=lambda s: -s[0])
            out.append(head + scored[top:])
        return out


def _system(fits: LinearFits, components: Components) -> tuple[tuple[Tree, ...], list[float]] | None:
    """The system of term tuples with each component's coefficients from its cheap fit."""
    trees, constants = [], []
    for i, terms in enumerate(components):
        fitted = fits.fit(terms, i)
        if fitted is None:
            return None
        tree, values = sum_tree(terms, fitted[0])
        trees.append(tree)
        constants += values
    return tuple(trees), constants
