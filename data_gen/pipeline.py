"""The generation pipeline: sample skeletons, instantiate, integrate in one batch, filter.

:func:`generate_chunk` is the unit of work, a pure function of (grammar, seed, chunk index), so results
do not depend on how many worker processes run it. Both the ``odeformer generate`` command and the
trainer's streaming iterator (:func:`stream_chunks`) call it.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing as mp
import multiprocessing.pool
import os
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from data_gen.grammar import Grammar
from data_gen.integrate import STATUS_NAMES, STATUS_OK, solve_batch
from data_gen.program import build_batch, compile_system
from data_gen.sampler import (
    Skeleton,
    SkeletonSampler,
    sample_constants,
    sample_initial_conditions,
    sample_time_spans,
)

#: skeleton draws per chunk: large enough to amortise a batch call, small enough for steady progress
SKELETONS_PER_CHUNK = 64


@dataclass
class System:
    """One accepted system: its skeleton, constants and dense trajectories."""

    skeleton: Skeleton
    constants: np.ndarray  # (n_free,) in prefix order over all components
    t_end: float
    x: np.ndarray  # (n_ok, grid_points, dim) float32, the trajectories that passed every filter
    x0: np.ndarray  # (n_ok, dim)


@dataclass
class Chunk:
    systems: list[System]
    skeleton_draws: int
    rejections: Counter = field(default_factory=Counter)

    @property
    def distinct_skeletons(self) -> int:
        return len({s.skeleton.key for s in self.systems})


def chunk_seed(seed: int, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, index])


@dataclass
class Draw:
    """The systems a chunk will integrate: skeletons x instances x initial conditions."""

    skeletons: list[Skeleton]
    consts: list[np.ndarray]  # per skeleton: (instances, n_free)
    t_end: np.ndarray  # per system (skeleton-major)
    x0: np.ndarray  # per trajectory: (n_traj, max_dim), zero-padded
    traj_sys: np.ndarray  # per trajectory: its system
    skeleton_draws: int
    rejections: Counter


def draw_chunk(grammar: Grammar, seed: int, index: int, n_skeletons: int = SKELETONS_PER_CHUNK) -> Draw:
    """Sample ``n_skeletons`` skeletons (rejecting degenerate and repeated ones), each instantiated
    ``tree.instances_per_skeleton`` times with fresh constants, initial conditions and time spans."""
    structure_seed, value_seed = chunk_seed(seed, index).generate_state(2)
    sampler = SkeletonSampler(grammar, int(structure_seed))
    rng = np.random.default_rng(int(value_seed))
    k = grammar["tree"]["instances_per_skeleton"]
    per = grammar["initial_conditions"]["per_system"]
    rejections: Counter = Counter()
    skeletons: list[Skeleton] = []
    seen: set[str] = set()
    for _ in range(n_skeletons):
        s = sampler.sample()
        if isinstance(s, str):
            rejections[s] += 1
        elif s.key in seen:
            rejections["duplicate"] += 1
        else:
            seen.add(s.key)
            skeletons.append(s)
    consts = [sample_constants(grammar, rng, k, s.n_constants) for s in skeletons]
    t_end = sample_time_spans(grammar, rng, k * len(skeletons))
    x0 = np.zeros((len(skeletons) * k * per, grammar.max_dim))
    for i, s in enumerate(skeletons):
        x0[i * k * per:(i + 1) * k * per, :s.dim] = sample_initial_conditions(grammar, rng, k, s.dim).reshape(-1, s.dim)
    traj_sys = np.repeat(np.arange(len(skeletons) * k), per)
    return Draw(skeletons, consts, t_end, x0, traj_sys, n_skeletons, rejections)


def generate_chunk(grammar: Grammar, seed: int, index: int, n_skeletons: int = SKELETONS_PER_CHUNK,
                   verify: bool = True) -> Chunk:
    """Draw a chunk (:func:`draw_chunk`), integrate all its trajectories in one batch and keep the
    systems with at least one trajectory that passed every filter."""
    draw = draw_chunk(grammar, seed, index, n_skeletons)
    rejections = draw.rejections
    if not draw.skeletons:
        return Chunk([], n_skeletons, rejections)
    skeletons, consts, t_end, x0 = draw.skeletons, draw.consts, draw.t_end, draw.x0
    k = grammar["tree"]["instances_per_skeleton"]
    per = grammar["initial_conditions"]["per_system"]
    batch = build_batch([compile_system(s.components) for s in skeletons], consts, t_end)
    integ = grammar["integration"]
    sol = solve_batch(batch, x0, draw.traj_sys, grammar["time"]["grid_points"], integ["rtol"], integ["atol"],
                      integ["max_steps"], integ["bound"],
                      verify_factor=integ["verify_factor"] if verify else 0.0)

    good = sol.status == STATUS_OK
    for code, n in zip(*np.unique(sol.status, return_counts=True)):
        rejections["traj_" + STATUS_NAMES[int(code)]] += int(n)
    good_sys = good.reshape(-1, per).any(axis=1)
    n_bad = int((~good_sys).sum())
    if n_bad:
        rejections["system_no_valid_trajectory"] += n_bad
    rows = np.flatnonzero(good)
    x_good = sol.x[rows].astype(np.float32)
    x0_good = x0[rows]
    owner = rows // per
    bounds = np.searchsorted(owner, np.flatnonzero(good_sys), side="left").tolist() + [len(rows)]
    systems: list[System] = []
    for n, sys_index in enumerate(np.flatnonzero(good_sys).tolist()):
        i, j = divmod(sys_index, k)
        d = skeletons[i].dim
        a, b = bounds[n], bounds[n + 1]
        systems.append(System(skeletons[i], consts[i][j], float(t_end[sys_index]), x_good[a:b, :, :d],
                              x0_good[a:b, :d]))
    return Chunk(systems, n_skeletons, rejections)


def _worker(args) -> Chunk:
    grammar_json, source, seed, index, verify = args
    return generate_chunk(Grammar.from_dict(json.loads(grammar_json), source), seed, index, verify=verify)


@contextmanager
def single_threaded_children():
    """One thread per worker process: thread-pool variables that processes started inside read at
    start-up (overriding any set value, which they would otherwise inherit); restored afterwards."""
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update({k: "1" for k in names})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def ordered_map(fn: Callable, jobs: Iterable, workers: int) -> Iterator:
    """``map(fn, jobs)`` over ``workers`` processes, results in order, a bounded number in flight
    (``jobs`` may be infinite). ``fn`` must be a module-level function.

    This process is one of the ``workers``: it starts ``workers - 1`` children and, whenever the next
    result in order is not ready, computes the next job itself rather than wait. A spawned child
    needs 2-3 s before its first result (interpreter, numpy/numba/sympy imports, loading the compiled
    integrator), some 15-25 chunks' worth of work; with the parent idle meanwhile, as before issue 15,
    two workers were no faster than one on runs of a few thousand systems."""
    jobs = iter(jobs)
    if workers <= 1:
        yield from map(fn, jobs)
        return
    ctx = mp.get_context("spawn")  # fork is unsafe beside torch's and numba's threads
    with single_threaded_children():
        pool = ctx.Pool(workers - 1)
    # queued per child, so that none runs dry while this process computes a chunk or writes a shard
    in_flight = 6 * (workers - 1)
    max_pending = in_flight + 4 * workers  # results held for order, at most
    with pool:
        pending: deque = deque()  # in job order: AsyncResult (a child's) or _Done (computed here)
        n_async = 0

        def pull() -> bool:
            nonlocal n_async
            job = next(jobs, _END)
            if job is _END:
                return False
            pending.append(pool.apply_async(fn, (job,)))
            n_async += 1
            return True

        exhausted = False
        while not exhausted and n_async < in_flight:
            exhausted = not pull()
        while pending:
            head = pending[0]
            while isinstance(head, mp.pool.AsyncResult) and not head.ready():
                if exhausted or len(pending) >= max_pending:
                    head.wait()
                    break
                job = next(jobs, _END)
                if job is _END:
                    exhausted = True
                    continue
                pending.append(_Done(fn(job)))
            pending.popleft()
            if isinstance(head, _Done):
                yield head.value
                continue
            n_async -= 1
            result = head.get()
            while not exhausted and n_async < in_flight:
                exhausted = not pull()
            yield result


_END = object()


class _Done:
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def stream_chunks(grammar: Grammar, seed: int, workers: int = 1, start: int = 0, stop: int | None = None,
                  verify: bool = True) -> Iterator[Chunk]:
    """Chunks ``start, start+1, ...`` (up to ``stop``, or forever) in order, computed by ``workers``
    processes. The sequence is the same for any number of workers."""
    indices = itertools.count(start) if stop is None else range(start, stop)
    return ordered_map(_worker, ((grammar.to_json(), grammar.source, seed, i, verify) for i in indices), workers)
