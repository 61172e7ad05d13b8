"""The local search around the best candidates (odeformer/search/local.py): it repairs a nearly right
skeleton, mixes components of different proposals, and a larger evaluation budget never ends worse."""

import numpy as np
import pytest
import sympy as sp
from scipy.integrate import solve_ivp

from data_gen.expressions import CONST, to_sympy
from odeformer.search import Problem, Proposal, Search
from odeformer.search.library import Term
from odeformer.search.local import Climb, LocalSearch, Motifs, canonical, rewrites

OPS = {"add", "sub", "mul", "div", "neg", "sin", "cos", "exp", "pow2", "pow3", "inv", "tanh"}
NAMES = ["theta", "omega"]


def pendulum(noise: float = 0.0, seed: int = 0) -> list:
    t = np.linspace(0, 10, 150)
    sol = solve_ivp(lambda _, y: [y[1], -0.3 * y[1] - 4 * np.sin(y[0])], (0, 10), [1.0, 0.0], t_eval=t,
                    rtol=1e-10, atol=1e-12).y.T
    rng = np.random.default_rng(seed)
    return [(t, sol + noise * rng.standard_normal(sol.shape) * sol.std(axis=0))]


class Fixed:
    """A proposal source that proposes the systems it was given, and nothing else."""

    name = "fixed"

    def __init__(self, *systems):
        self.systems = systems

    def propose(self, problem, earlier):
        return [Proposal(comps, list(consts), self.name) for comps, consts in self.systems]


#: theta' = omega, omega' = c*omega + c*cos(theta): the pendulum with cos where sin belongs
WRONG_UNARY = (("x_1", ("add", ("mul", CONST, "x_1"), ("mul", CONST, ("cos", "x_0")))), [-0.3, -4.0])


def best_omega(cands) -> str:
    return cands[0].rhs["omega"]


def test_a_wrong_unary_operator_is_repaired():
    """Seeded only with cos where sin belongs, the local search returns the law; without it, the search
    can only return the wrong skeleton."""
    without = Search([Fixed(WRONG_UNARY)]).run(Problem(pendulum(), NAMES, OPS, False, 60.0))
    assert "cos" in best_omega(without) and "sin" not in best_omega(without)
    cands = Search([Fixed(WRONG_UNARY)], local=LocalSearch()).run(Problem(pendulum(), NAMES, OPS, False, 60.0))
    assert "sin(theta)" in best_omega(cands) and "cos" not in best_omega(cands), best_omega(cands)
    assert cands[0].source == "local" and cands[0].r2 > 0.9999
    assert cands[0].score > without[0].score + 10


def test_components_of_two_proposals_are_mixed():
    """One proposal has the right theta', the other the right omega': the climb puts them together."""
    right_first = (("x_1", ("mul", CONST, "x_0")), [-4.0])
    right_second = ((("mul", CONST, "x_0"), ("add", ("mul", CONST, "x_1"), ("mul", CONST, ("sin", "x_0")))),
                    [0.5, -0.3, -4.0])
    cands = Search([Fixed(right_first, right_second)], local=LocalSearch()).run(
        Problem(pendulum(), NAMES, OPS, False, 60.0))
    theta = sp.parse_expr(cands[0].rhs["theta"], local_dict={"omega": sp.Symbol("omega")})
    assert theta.free_symbols == {sp.Symbol("omega")} and abs(float(theta.subs("omega", 1)) - 1) < 1e-4
    assert "sin(theta)" in best_omega(cands) and cands[0].r2 > 0.9999, cands[0].rhs


def test_a_larger_evaluation_budget_never_ends_worse():
    """With the budget counted in trajectory refits (deterministic, the clock far away), the best
    criterion value never falls as the budget grows, and the largest one improves on no local search."""
    data = pendulum(noise=0.02, seed=3)
    best = []
    for budget in (0, 1, 2, 4, 8, 32):
        search = Search([Fixed(WRONG_UNARY)], local=LocalSearch(), max_evaluations=budget)
        best.append(search.run(Problem(data, NAMES, OPS, False, 600.0))[0].score)
    assert all(b >= a for a, b in zip(best, best[1:])), best
    assert best[-1] > best[0] + 10, best


def spiral(seed: int = 0) -> list:
    """Lorenz's form at a stable spiral (sigma 6, rho 10, beta 2): 75 of 150 points, 5% relative noise."""
    t = np.linspace(0, 10, 150)
    x = solve_ivp(lambda _, v: [6 * (v[1] - v[0]), 10 * v[0] - v[1] - v[0] * v[2], v[0] * v[1] - 2 * v[2]],
                  (0, 10), [2.0, 7.0, 11.0], t_eval=t, rtol=1e-10, atol=1e-12).y.T
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(150, 75, replace=False))
    return [(t[keep], x[keep] * (1 + 0.05 * rng.standard_normal((75, 3))))]


SPIRAL_LAW = ((("add", ("mul", CONST, "x_1"), ("mul", CONST, "x_0")),
               ("add", ("add", ("mul", CONST, "x_0"), ("mul", CONST, "x_1")), ("mul", CONST, ("mul", "x_0", "x_2"))),
               ("add", ("mul", CONST, ("mul", "x_0", "x_1")), ("mul", CONST, "x_2"))),
              [6.0, -6.0, 10.0, -1.0, -1.0, 1.0, -2.0])


def test_noisy_edits_are_screened_along_the_candidates_trajectory():
    """On sparse noisy data the smoothing splines bias the cheap fit of x' = 6 (y - x) (errors in the
    variables); along a fitted candidate's own trajectory the coefficients come out near 6, the pair
    (x, y) ranks first among all pairs, and the sparse path there puts it in the pool. A candidate that
    does not reproduce the data, and clean data, keep the splines' screen."""
    import itertools

    ops = {"add", "sub", "mul", "div", "neg", "sin", "cos", "exp", "pow2", "inv"}
    problem = Problem(spiral(), ["x", "y", "z"], ops, False, 60.0)
    assert not problem.clean
    cands = Search([Fixed(SPIRAL_LAW)]).run(problem)
    climb = Climb(LocalSearch(), problem, cands, [], None)
    along = climb._screen(cands[0])
    assert along is not climb.base_fits
    pair = canonical((Term("x_0"), Term("x_1")))
    assert np.allclose(np.abs(along.fit(pair, 0)[0]), 6.0, rtol=0.15), along.fit(pair, 0)[0]
    assert np.all(np.abs(climb.base_fits.fit(pair, 0)[0]) < 3.0)  # the splines' bias this screen avoids
    terms = [Term("x_0"), Term("x_1"), Term("x_2"), Term(("mul", "x_0", "x_1")), Term(("mul", "x_0", "x_2")),
             Term(("mul", "x_1", "x_2")), Term(("pow2", "x_0")), Term(("pow2", "x_1")), Term(("pow2", "x_2")), None]
    pairs = [canonical(p) for p in itertools.combinations(terms, 2)]
    assert min(pairs, key=lambda p: along.fit(p, 0)[1]) == pair
    assert min(pairs, key=lambda p: climb.base_fits.fit(p, 0)[1]) != pair
    assert pair in climb.pool[0]
    decay = ((("mul", CONST, "x_0"), ("mul", CONST, "x_1"), ("mul", CONST, "x_2")), [-1.0, -1.0, -1.0])
    wrong = Search([Fixed(decay)]).run(Problem(spiral(), ["x", "y", "z"], ops, False, 60.0))
    assert wrong[0].fit.r2 < 0.5
    assert climb._screen(wrong[0]) is climb.base_fits
    clean = Problem(pendulum(), NAMES, OPS, False, 60.0)
    right = Search([Fixed(WRONG_UNARY)]).run(clean)
    climb = Climb(LocalSearch(), clean, right, [], None)
    assert climb._screen(right[0]) is climb.base_fits


def test_one_edit_gets_at_most_its_share_of_the_budget(monkeypatch):
    """Every refit of the climb runs under a deadline at most its share of the budget after it starts
    (a stiff edit is a miss, not the rest of the fit), and the proposal's refit under its own, larger
    share (the first refit of a fit: nothing is timed yet, so the stage ends at its fixed share, later)."""
    import time

    import odeformer.search.engine as engine
    from odeformer.search import schedule

    budget = 60.0
    calls = []
    original = engine.refit

    def spy(*args, deadline, **kwargs):
        calls.append((time.monotonic(), deadline))
        return original(*args, deadline=deadline, **kwargs)

    monkeypatch.setattr(engine, "refit", spy)
    problem = Problem(pendulum(noise=0.02, seed=3), NAMES, OPS, False, budget)
    cands = Search([Fixed(WRONG_UNARY)], local=LocalSearch()).run(problem)
    assert "sin(theta)" in best_omega(cands)
    stage = problem.by(schedule.FIXED[0])
    (at, d), rest = calls[0], calls[1:]  # the proposal's refit first
    assert at + engine.EDIT_SHARE * budget < d <= min(stage, at + engine.PROPOSAL_SHARE * budget)
    capped = [(at, d) for at, d in rest if d < stage]  # pruning, units and final refits end later
    assert len(capped) >= 8  # the climb's refits
    assert all(d <= at + max(engine.EDIT_FLOOR_S, engine.EDIT_SHARE * budget) for at, d in capped)


@pytest.mark.parametrize("tree, expected", [
    (("cos", "x_0"), ("sin", "x_0")),  # a unary operator swapped
    (("mul", "x_0", "x_1"), ("mul", ("div", "x_0", ("add", CONST, "x_0")), "x_1")),  # a saturation motif
])
def test_rewrites_include_the_repair(tree, expected):
    motif = {"x_0": [(("div", "x_0", ("add", CONST, "x_0")), (1.0,)), (("sin", "x_0"), ())], "x_1": []}
    out = rewrites(tree, (), OPS, motif)
    assert expected in [new for new, _, _ in out]
    for new, consts, _ in out:
        to_sympy(new, list(consts))  # every rewrite is a well-formed tree with its constants


def test_no_motif_inside_a_transcendental_function():
    motif = {"x_0": [(("exp", ("mul", CONST, "x_0")), (1.0,))]}
    out = [new for new, _, _ in rewrites(("tanh", ("mul", CONST, "x_0")), (2.0,), OPS, motif)]
    assert ("tanh", ("mul", CONST, ("exp", ("mul", CONST, "x_0")))) not in out
    assert ("sin", ("mul", CONST, "x_0")) in out


def autoactivation() -> list:
    """x' = 0.6 + 3 x^2/(4 + x^2) - x (a gene activating itself, Hill coefficient 2), two starts."""
    t = np.linspace(0, 8, 120)
    rhs = lambda _, y: [0.6 + 3 * y[0] ** 2 / (4 + y[0] ** 2) - y[0]]  # noqa: E731
    return [(t, solve_ivp(rhs, (0, 8), [x0], t_eval=t, rtol=1e-10, atol=1e-12).y.T) for x0 in (0.2, 4.0)]


def test_a_subterm_becomes_a_hill_function():
    """Seeded only with a polynomial (c + c x^2 + c x), the climb turns the subterm x^2 into the Hill
    function x^2/(K + x^2), which no variable motif reaches in one step."""
    seed = (("add", ("add", CONST, ("mul", CONST, ("pow2", "x_0"))), ("mul", CONST, "x_0")),), [0.6, 0.3, -1.0]
    problem = lambda: Problem(autoactivation(), ["x"], OPS, False, 60.0)  # noqa: E731
    without = Search([Fixed(seed)]).run(problem())
    cands = Search([Fixed(seed)], local=LocalSearch()).run(problem())
    law = sp.parse_expr(cands[0].rhs["x"], local_dict={"x": sp.Symbol("x")})
    x = sp.Symbol("x")
    assert cands[0].score > without[0].score + 10 and cands[0].r2 > 0.9999, cands[0].rhs
    # the same function as the law, not an approximant of it: equal far outside the data
    for value in (0.0, 1.0, 10.0, 30.0):
        assert abs(float(law.subs(x, value)) - (0.6 + 3 * value ** 2 / (4 + value ** 2) - value)) < 1e-3, law


def test_motifs_of_a_subterm():
    """A power of one variable may become a saturation where it is positive (a Hill function); a
    subterm with constants, of two variables, or with a transcendental function is left alone."""
    problem = Problem(pendulum(), NAMES, OPS, False, 10.0)
    motif = Motifs(problem)
    square = ("pow2", "x_0")
    assert [m for m, _ in motif.get(square)] == [("div", square, ("add", CONST, square))]
    assert ("div", "x_0", ("add", CONST, "x_0")) not in [m for m, _ in motif.get("x_0")]  # theta changes sign
    assert ("sin", "x_0") in [m for m, _ in motif.get("x_0")]
    for tree in (("mul", CONST, "x_0"), ("mul", "x_0", "x_1"), ("sin", "x_0")):
        assert motif.get(tree) == [], tree


@pytest.fixture(scope="module")
def shipped():
    from odeformer import checkpoint as ckpt

    return ckpt.load(ckpt.default_path(), "cpu")


def test_the_transformer_prior_scores_skeletons(shipped):
    """A skeleton's log-probability: negative, the same alone as in a batch with longer systems (the
    padding counts for nothing), nan where the model cannot write the system."""
    from odeformer.search.transformer import TransformerPrior

    prior = TransformerPrior(shipped).for_problem(Problem(pendulum(), NAMES, OPS, False, 10.0))
    law = ("x_1", ("add", ("mul", CONST, "x_1"), ("mul", CONST, ("sin", "x_0"))))
    longer = ("x_1", ("add", law[1], ("mul", CONST, ("pow3", "x_0"))))
    too_long = law
    for _ in range(60):  # a sum longer than the model decodes
        too_long = ("x_1", ("add", too_long[1], ("mul", CONST, "x_0")))
    alone = prior.log_prob([(law, [-0.3, -4.0])])
    lp = prior.log_prob([(longer, [-0.3, -4.0, 0.1]), (law, [-0.3, -4.0]), (("x_1", ("gamma", "x_0")), []),
                         (too_long, [1.0] * 62)])
    assert np.isfinite(lp[:2]).all() and (lp[:2] < 0).all() and abs(lp[1] - alone[0]) < 1e-4, (lp, alone)
    assert np.isnan(lp[2]) and np.isnan(lp[3]), lp


def test_the_climb_with_the_transformer_prior(shipped, monkeypatch):
    """With the prior reordering its edits, the climb is consulted and still repairs the pendulum."""
    from odeformer.search.transformer import SkeletonPrior, TransformerPrior

    calls = []
    log_prob = SkeletonPrior.log_prob
    monkeypatch.setattr(SkeletonPrior, "log_prob", lambda self, systems: calls.append(len(systems))
                        or log_prob(self, systems))
    cands = Search([Fixed(WRONG_UNARY)], local=LocalSearch(prior=TransformerPrior(shipped))).run(
        Problem(pendulum(), NAMES, OPS, False, 60.0))
    assert calls and "sin(theta)" in best_omega(cands) and cands[0].r2 > 0.9999, (calls, best_omega(cands))


#: the pendulum's law, theta' = omega, omega' = c*omega + c*sin(theta)
LAW = (("x_1", ("add", ("mul", CONST, "x_1"), ("mul", CONST, ("sin", "x_0")))), [-0.3, -4.0])


def test_a_poor_best_candidate_gets_a_more_patient_climb():
    """A climb whose best candidate reproduces less than POOR_R2 of the data tries POOR_SCALE times as
    many edits in a row without improvement before it stops; one from a candidate that reproduces the
    data stops after the reference patience (every edit here a miss, counted in evaluations)."""
    from odeformer.search import local

    tried = {}
    for name, system in (("wrong", WRONG_UNARY), ("law", LAW)):
        problem = Problem(pendulum(noise=0.02, seed=3), NAMES, OPS, False, 10.0)
        assert problem.budget_scale == 1.0
        cands = Search([Fixed(system)]).run(problem)[:1]
        calls = []

        def miss(components, constants, tuned, calls=calls):
            calls.append(components)

        Climb(LocalSearch(), problem, cands, [], miss).run(np.inf, None)
        tried[name] = (cands[0].r2, len(calls))
    assert tried["wrong"][0] < local.POOR_R2 <= tried["law"][0], tried
    assert tried["wrong"][1] == round(LocalSearch().patience * local.POOR_SCALE), tried
    assert tried["law"][1] == LocalSearch().patience, tried


def test_each_skeleton_is_refitted_once_in_a_climb():
    """omega' = c*omega + c*theta*omega: the climb reaches sin(theta) and refits no skeleton twice (edits
    that differ only in a motif's starting constant are one skeleton)."""
    problem = Problem(pendulum(0.05), NAMES, OPS, False, 60.0)
    seed = (("x_1", ("add", ("mul", CONST, "x_1"), ("mul", CONST, ("mul", "x_0", "x_1")))), [-0.3, -4.0])
    cands = Search([Fixed(seed)]).run(problem)
    refitted = []

    def evaluate(components, constants, tuned):
        refitted.append(components)
        return Search([])._candidate(components, constants, problem, np.inf, "local", tuned)

    found = Climb(LocalSearch(), problem, cands, [], evaluate).run(np.inf, 40)
    assert len(refitted) == len(set(refitted)) > 0
    assert found and "sin(theta)" in found[-1].rhs["omega"], [c.rhs for c in found]
