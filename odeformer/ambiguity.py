"""When the data cannot decide the law, and which experiment would decide it.

One trajectory often does not determine the law: over the range a system visits, ``0.5*exp(-0.3*x)``,
a quadratic and a saturation can fit equally well and still predict different futures from another
start. Two steps, both on the ranked candidates of a fit (docs/ambiguity.md):

1. :func:`assess` (every fit): the *close* candidates are those whose criterion lies within
   ``MARGIN_NATS`` of the best (``score`` is minus the criterion, a BIC on the ``2 log L`` scale, so a gap
   of 10 nats is a Bayes factor of e^5 ~ 150, "very strong" on Kass and Raftery's scale; a smaller gap is
   not evidence enough to prefer one form). Their structures differ (the search keeps one candidate per
   form). Each is simulated, with the best, from a fixed set of initial states in the *probe box* (the
   observed range of each variable widened by its width on each side) over the observed span. Where the
   root-mean-square difference of the two predictions, per variable in units of ``sigma`` (the estimated
   noise, at least ``REL_FLOOR`` of the variable's spread), exceeds ``SEPARATION``, the candidate is a
   *rival* and the fit is ``ambiguous``.
2. :func:`suggest` (when asked): the initial state (within bounds the user gives, else the probe box) and
   the recording length (up to ``max_duration``, default twice the observed span) whose predictions of
   the best and its rivals differ most, the smallest of the best-versus-rival separations maximised so that
   one recording tells the best apart from every rival; with the rivals' predicted trajectories.

Everything runs in the search's normalised frame (``Problem.norm``) with the batched integrator of
``search/refit.py``, and is reported in the user's units.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from odeformer.search.candidate import Candidate, form
from odeformer.search.problem import Problem
from odeformer.search.ranking import MARGIN_NATS
from odeformer.search.refit import simulate_many
from odeformer.validation import InputError

#: the probe box: each variable's observed range widened by this share of its width on each side
WIDEN = 1.0
#: sigma of a variable is at least this share of its observed spread: on clean data the estimated noise
#: is ~0, and a disagreement of a fraction of a percent is not a different future
REL_FLOOR = 0.02
#: predictions whose RMS difference exceeds this many sigma disagree (calibrated: docs/ambiguity.md)
SEPARATION = 3.0
#: probe states: every trajectory's first observed state, the box's corners (up to 16) and this many
#: points of a scrambled Halton sequence (seeded: the same data give the same flag)
N_PROBES = 24
#: points per simulated probe trajectory
PROBE_POINTS = 80
#: the suggestion: sampled initial states in the bounds, then around the best of them
SEARCH_POINTS, REFINE_POINTS = 64, 32
#: recording lengths tried, as shares of the longest allowed one
DURATION_SHARES = (0.25, 0.5, 0.75, 1.0)
#: the longest recording suggested by default, as a multiple of the observed span
MAX_DURATION_FACTOR = 2.0
#: points of the predicted trajectories returned with a suggestion
OUTPUT_POINTS = 100
#: seconds the checks may spend in the stiff fallback integrator per call
CHECK_BUDGET_S = 1.0


@dataclass
class Ambiguity:
    """The result of :func:`assess`; indices are ranks counted from 0 (best first)."""

    ambiguous: bool = False
    gaps: list[float] = field(default_factory=list)  # per candidate: best score - its score, nats
    close: list[int] = field(default_factory=list)  # other candidates within MARGIN_NATS
    rivals: list[int] = field(default_factory=list)  # close ones whose predictions disagree with the best's
    separation: dict[int, float] = field(default_factory=dict)  # per close candidate: largest RMS / sigma
    margin_nats: float = MARGIN_NATS


@dataclass
class Experiment:
    """A suggested recording: start at ``x0`` (user units) at time ``t0``, record for ``duration``.
    ``predictions[k]`` is candidate ``ranks[k]``'s trajectory at times ``t``; ``separation`` is the
    smallest RMS difference between the best's prediction and a rival's, in sigma;
    ``evidence_nats`` the criterion gap a recording of as many points as the data would add at that
    separation (``n * separation**2``)."""

    x0: np.ndarray
    t0: float
    duration: float
    t: np.ndarray
    ranks: list[int]
    predictions: np.ndarray  # (len(ranks), len(t), d)
    separation: float
    evidence_nats: float
    bounds: np.ndarray  # (d, 2), user units
    ambiguous: bool

    def to_dict(self, names: Sequence[str]) -> dict:
        """JSON-ready, ranks counted from 1 as in the result's candidate list."""
        return {"x0": {n: float(v) for n, v in zip(names, self.x0)}, "t0": float(self.t0),
                "duration": float(self.duration), "rivals": [r + 1 for r in self.ranks],
                "separation": _finite(self.separation), "evidence_nats": _finite(self.evidence_nats),
                "bounds": {n: [float(lo), float(hi)] for n, (lo, hi) in zip(names, self.bounds)},
                "ambiguous": bool(self.ambiguous),
                "t": [float(v) for v in self.t],
                "predictions": [{"rank": r + 1,
                                 "states": {n: [_value(v) for v in p[:, j]] for j, n in enumerate(names)}}
                                for r, p in zip(self.ranks, self.predictions)]}


def _value(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None  # JSON has no NaN: a failed prediction is null


def _finite(v: float) -> float:
    return float(v) if math.isfinite(v) else 1e300


# --- shared pieces -------------------------------------------------------------------------------------

def score_gaps(cands: Sequence[Candidate]) -> list[float]:
    """Each candidate's distance below the best score, in nats (0 for the best)."""
    if not cands:
        return []
    best = max(c.score for c in cands)
    return [float(best - c.score) for c in cands]


def sigma(problem: Problem) -> np.ndarray:
    """Per-variable unit of disagreement (normalised frame): the noise's standard deviation, at least
    ``REL_FLOOR`` of the observed spread."""
    return np.sqrt(np.maximum(problem.noise_var, (REL_FLOOR * np.maximum(problem.spread, 1e-12)) ** 2))


def probe_box(problem: Problem, widen: float | None = None) -> np.ndarray:
    """(d, 2) bounds (normalised frame): the observed range widened by ``widen`` of its width on each
    side; a variable that keeps one sign throughout the data keeps it (concentrations stay positive)."""
    widen = WIDEN if widen is None else widen
    obs = problem.observed
    lo, hi = obs.min(axis=0), obs.max(axis=0)
    width = np.maximum(hi - lo, 1e-6 * np.maximum(np.abs(hi), 1.0))
    box = np.stack([lo - widen * width, hi + widen * width], axis=1)
    box[:, 0] = np.where(lo > 0, np.maximum(box[:, 0], 0.5 * lo), box[:, 0])
    box[:, 1] = np.where(hi < 0, np.minimum(box[:, 1], 0.5 * hi), box[:, 1])
    return box


def _halton(n: int, d: int, seed: int) -> np.ndarray:
    from scipy.stats import qmc

    return qmc.Halton(d, scramble=True, seed=seed).random(n)


def _corners(box: np.ndarray) -> np.ndarray:
    d = len(box)
    if d > 4:
        return np.zeros((0, d))
    idx = (np.arange(2**d)[:, None] >> np.arange(d)[None, :]) & 1
    return box[np.arange(d)[None, :], idx]


def _simulate(cand: Candidate, starts: np.ndarray, t: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """(m, len(t), d) predictions of ``cand`` from each start (normalised frame), NaN where it fails or
    leaves ``bound`` (a pole or a blow-up is not a prediction to compare)."""
    fit = cand.fit
    rows = np.repeat(np.asarray(fit.constants, dtype=np.float64)[None], len(starts), axis=0)
    runs = simulate_many(fit.components, rows, t, starts, time.monotonic() + CHECK_BUDGET_S)
    out = np.full((len(starts), len(t), starts.shape[1]), np.nan)
    for i, r in enumerate(runs):
        if r is not None and np.all(np.abs(r) <= bound):
            out[i] = r
    return out


def _rms(a: np.ndarray, b: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """RMS over time of each variable's difference in ``unit``, the largest over variables; per start
    (NaN where either failed)."""
    return np.sqrt(np.mean(((a - b) / unit) ** 2, axis=1)).max(axis=-1)


def _bound(problem: Problem, box: np.ndarray) -> np.ndarray:
    return 10.0 * (np.abs(box).max(axis=1) + problem.spread)


# --- 1. ambiguity ----------------------------------------------------------------------------------------

def assess(problem: Problem, cands: Sequence[Candidate], margin: float = MARGIN_NATS,
           threshold: float = SEPARATION) -> Ambiguity:
    """Close candidates (within ``margin`` nats of the best, another form) whose predictions from the
    probe states disagree with the best's by more than ``threshold`` sigma are rivals; see the module doc."""
    gaps = score_gaps(cands)
    out = Ambiguity(gaps=gaps, margin_nats=margin)
    if len(cands) < 2 or cands[0].fit is None:
        return out
    best_form = form(cands[0])
    out.close = [i for i in range(1, len(cands))
                 if gaps[i] <= margin and cands[i].fit is not None and form(cands[i]) != best_form]
    if not out.close:
        return out
    box = probe_box(problem)
    starts = np.vstack([[x[0] for _, x in problem.ndata], _corners(box),
                        box[:, 0] + _halton(N_PROBES, problem.dim, seed=0) * (box[:, 1] - box[:, 0])])
    t0 = problem.ndata[0][0][0]
    t = np.linspace(t0, t0 + _span(problem), PROBE_POINTS)
    unit, bound = sigma(problem), _bound(problem, box)
    ref = _simulate(cands[0], starts, t, bound)
    for i in out.close:
        sep = _rms(ref, _simulate(cands[i], starts, t, bound), unit)
        sep = sep[np.isfinite(sep)]
        out.separation[i] = float(sep.max()) if len(sep) else 0.0
        if out.separation[i] > threshold:
            out.rivals.append(i)
    out.ambiguous = bool(out.rivals)
    return out


def _span(problem: Problem) -> float:
    """The longest observed trajectory's span (normalised frame)."""
    return max(float(t[-1] - t[0]) for t, _ in problem.ndata)


# --- 2. the suggested experiment ------------------------------------------------------------------------

def check_bounds(bounds, names: Sequence[str]) -> np.ndarray | None:
    """User bounds on the initial state -> (d, 2) float array in user units, or None for the default
    box. Accepts ``{name: (lo, hi)}`` (variables left out get the default box: NaN rows here) or one
    ``(lo, hi)`` pair per variable. ``lo == hi`` fixes that variable's start."""
    if bounds is None:
        return None
    d = len(names)
    if isinstance(bounds, Mapping):
        unknown = [k for k in bounds if k not in names]
        if unknown:
            raise InputError(f"bounds: unknown variable(s) {unknown} (variables: {', '.join(names)})")
        out = np.full((d, 2), np.nan)
        for k, pair in bounds.items():
            out[list(names).index(k)] = _pair(pair, k)
        return out
    try:
        arr = np.asarray(bounds, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("bounds: give one (lower, upper) pair of numbers per variable") from None
    if arr.shape != (d, 2):
        raise InputError(f"bounds: shape {arr.shape}; expected ({d}, 2), one (lower, upper) pair per variable "
                         f"({', '.join(names)})")
    for k, pair in zip(names, arr):
        _pair(pair, k)
    return arr


def _pair(pair, name: str) -> tuple[float, float]:
    if isinstance(pair, (str, bytes)):  # "01" would otherwise read as (0, 1)
        raise InputError(f"bounds for {name}: expected (lower, upper), got {pair!r}")
    try:
        lo, hi = (float(v) for v in pair)
    except (TypeError, ValueError):
        raise InputError(f"bounds for {name}: expected (lower, upper), got {pair!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"bounds for {name}: ({lo}, {hi}) must be finite numbers")
    if lo > hi:
        raise InputError(f"bounds for {name}: lower {lo} is above upper {hi}")
    return lo, hi


def check_duration(value, what: str = "max_duration") -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what}: not a number ({value!r})") from None
    if not (math.isfinite(v) and v > 0):
        raise InputError(f"{what}: must be a finite number > 0, got {value!r}")
    return v


def parse_bounds(text: str) -> dict[str, tuple[float, float]]:
    """``"x=0:5,y=-1:2"`` (the command line's and the CSV route's form) -> ``{"x": (0, 5), ...}``; numbers
    are read with ``float``, nothing else is evaluated."""
    out: dict[str, tuple[float, float]] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, rng = part.partition("=")
        lo, sep2, hi = rng.partition(":")
        if not sep or not sep2 or not name.strip():
            raise InputError(f"bounds: {part!r} is not NAME=LOWER:UPPER")
        try:
            pair = (float(lo), float(hi))
        except ValueError:
            raise InputError(f"bounds: {part!r}: LOWER and UPPER must be numbers") from None
        name = name.strip()
        if name in out:
            raise InputError(f"bounds: {name} given twice")
        out[name] = _pair(pair, name)
    if not out:
        raise InputError("bounds: empty; expected NAME=LOWER:UPPER[,NAME=LOWER:UPPER...]")
    return out


def suggest(problem: Problem, cands: Sequence[Candidate], amb: Ambiguity, bounds: np.ndarray | None = None,
            max_duration: float | None = None, duration: float | None = None, seed: int = 0) -> Experiment:
    """The initial state and recording length that best separate the best candidate from its rivals
    (``amb.rivals``; with none, from the close candidates, else the next two), within ``bounds`` ((d, 2),
    user units, NaN rows: the probe box) and up to ``max_duration`` (user time units; ``duration`` fixes
    it). See the module doc."""
    if not cands or cands[0].fit is None:
        raise RuntimeError("no fitted candidates: call fit() first")
    others = amb.rivals or amb.close or [i for i in range(1, min(3, len(cands))) if cands[i].fit is not None]
    ranks = [0, *others]
    norm = problem.norm
    box = probe_box(problem)
    if bounds is not None:
        user = np.where(np.isnan(bounds), box * norm.x_scale[:, None], bounds)
        box = user / norm.x_scale[:, None]
    span = _span(problem)
    if duration is not None:
        lengths = [duration * norm.t_scale]
    else:
        longest = (max_duration * norm.t_scale) if max_duration is not None else MAX_DURATION_FACTOR * span
        lengths = [s * longest for s in DURATION_SHARES]
    t0 = problem.ndata[0][0][0]
    unit, bound = sigma(problem), _bound(problem, box)
    rng = np.random.default_rng(seed)

    def scores(starts: np.ndarray) -> np.ndarray:
        """(m, len(lengths)): the smallest separation of a pair of the candidates per start and length
        (pairs that agree everywhere tried are left out: no recording tells them apart)."""
        t = np.linspace(t0, t0 + max(lengths), 4 * PROBE_POINTS)
        preds = [_simulate(cands[i], starts, t, bound) for i in ranks]
        pairs = []
        for a in range(len(preds)):
            for b in range(a + 1, len(preds)):
                sep = np.stack([_rms(preds[a][:, t <= t0 + length + 1e-12], preds[b][:, t <= t0 + length + 1e-12],
                                     unit) for length in lengths], axis=1)
                pairs.append(np.where(np.isfinite(sep), sep, -1.0))  # a failed prediction is no experiment
        useful = [p for p in pairs if p.max() > SEPARATION] or pairs
        return np.min(useful, axis=0)

    if len(ranks) < 2:
        starts = np.array([[x[0] for _, x in problem.ndata][0]])
        best_start, best_len, best_sep = np.clip(starts[0], box[:, 0], box[:, 1]), lengths[-1], 0.0
    else:
        width = box[:, 1] - box[:, 0]
        starts = np.vstack([_corners(box), box.mean(axis=1)[None],
                            box[:, 0] + _halton(SEARCH_POINTS, problem.dim, seed) * width])
        s = scores(starts)
        k, j = np.unravel_index(np.argmax(s), s.shape)
        centre = starts[k]
        local = centre + (rng.random((REFINE_POINTS, problem.dim)) - 0.5) * 0.25 * width
        local = np.clip(local, box[:, 0], box[:, 1])
        s2 = scores(local)
        k2, j2 = np.unravel_index(np.argmax(s2), s2.shape)
        if s2[k2, j2] > s[k, j]:
            best_start, best_len, best_sep = local[k2], lengths[j2], float(s2[k2, j2])
        else:
            best_start, best_len, best_sep = centre, lengths[j], float(s[k, j])
    t = np.linspace(t0, t0 + best_len, OUTPUT_POINTS)
    preds = np.stack([_simulate(cands[i], best_start[None], t, np.full(problem.dim, np.inf))[0] for i in ranks])
    n_points = max(len(tt) for tt, _ in problem.ndata)
    sep = max(best_sep, 0.0)
    return Experiment(x0=best_start * norm.x_scale, t0=float(t0 / norm.t_scale + norm.t_shift),
                      duration=float(best_len / norm.t_scale), t=t / norm.t_scale + norm.t_shift, ranks=ranks,
                      predictions=preds * norm.x_scale, separation=sep, evidence_nats=float(n_points * sep**2),
                      bounds=box * norm.x_scale[:, None], ambiguous=amb.ambiguous)
