"""Batched ODE integration of many generated systems at once (numba-compiled).

Each system is a small stack-machine program per component (postfix opcodes, see
:func:`data_gen.program.compile_batch`). One compiled loop integrates every trajectory of a batch with
the Dormand-Prince 5(4) pair: adaptive steps from the embedded error estimate, a step cap, and cubic
Hermite dense output onto a fixed grid. A second, looser solve of the same trajectory estimates the
global error (``verify``): trajectories whose two solutions disagree are rejected as inaccurate, so a
kept trajectory is never silently wrong (chaotic and near-stiff systems are the usual culprits).

Why our own integrator: a Python loop of ``scipy.integrate.solve_ivp`` spends its time in interpreter
overhead (~100 trajectories/s per core); this loop runs the same method compiled, one trajectory per
iteration (``bench/generator.py`` measures the ratio).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

# opcodes shared with data_gen.program
OP_VAR, OP_TIME, OP_CONST = 0, 1, 2
OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_POW = 10, 11, 12, 13, 14
OP_NEG, OP_INV, OP_SQRT, OP_POW2, OP_POW3, OP_EXP, OP_LOG = 20, 21, 22, 23, 24, 25, 26
OP_SIN, OP_COS, OP_TAN, OP_TANH, OP_ATAN, OP_SINH, OP_COSH, OP_ABS = 27, 28, 29, 30, 31, 32, 33, 34

OPCODES = {
    "add": OP_ADD, "sub": OP_SUB, "mul": OP_MUL, "div": OP_DIV, "pow": OP_POW,
    "neg": OP_NEG, "inv": OP_INV, "sqrt": OP_SQRT, "pow2": OP_POW2, "pow3": OP_POW3, "exp": OP_EXP,
    "log": OP_LOG, "sin": OP_SIN, "cos": OP_COS, "tan": OP_TAN, "tanh": OP_TANH, "atan": OP_ATAN,
    "sinh": OP_SINH, "cosh": OP_COSH, "abs": OP_ABS,
}

STATUS_OK, STATUS_NAN, STATUS_BLOWUP, STATUS_STIFF, STATUS_INACCURATE, STATUS_FLAT = 0, 1, 2, 3, 4, 5
STATUS_NAMES = {STATUS_OK: "ok", STATUS_NAN: "nan", STATUS_BLOWUP: "blowup", STATUS_STIFF: "stiff",
                STATUS_INACCURATE: "inaccurate", STATUS_FLAT: "flat"}

STACK_DEPTH = 64  # fixed evaluation stack of the compiled right-hand sides


@njit(cache=True, error_model="numpy")
def _rhs(code, arg, consts, cbase, prog_ptr, comp0, dim, y, t, out, stack):
    for c in range(dim):
        sp = 0
        for k in range(prog_ptr[comp0 + c], prog_ptr[comp0 + c + 1]):
            op = code[k]
            if op == OP_VAR:
                stack[sp] = y[arg[k]]
                sp += 1
            elif op == OP_CONST:
                stack[sp] = consts[cbase + arg[k]]
                sp += 1
            elif op == OP_TIME:
                stack[sp] = t
                sp += 1
            elif op < OP_NEG:
                b = stack[sp - 1]
                a = stack[sp - 2]
                sp -= 1
                if op == OP_ADD:
                    r = a + b
                elif op == OP_SUB:
                    r = a - b
                elif op == OP_MUL:
                    r = a * b
                elif op == OP_DIV:
                    r = a / b
                else:
                    r = a**b if a >= 0.0 or b == math.floor(b) else math.nan
                stack[sp - 1] = r
            else:
                a = stack[sp - 1]
                if op == OP_POW2:
                    r = a * a
                elif op == OP_INV:
                    r = 1.0 / a
                elif op == OP_NEG:
                    r = -a
                elif op == OP_SIN:
                    r = math.sin(a)
                elif op == OP_COS:
                    r = math.cos(a)
                elif op == OP_EXP:
                    r = math.exp(a) if a < 700.0 else math.inf
                elif op == OP_POW3:
                    r = a * a * a
                elif op == OP_LOG:
                    r = math.log(a) if a > 0.0 else math.nan
                elif op == OP_SQRT:
                    r = math.sqrt(a) if a >= 0.0 else math.nan
                elif op == OP_TANH:
                    r = math.tanh(a)
                elif op == OP_ABS:
                    r = abs(a)
                elif op == OP_TAN:
                    r = math.tan(a)
                elif op == OP_ATAN:
                    r = math.atan(a)
                elif op == OP_SINH:
                    r = math.sinh(a) if abs(a) < 700.0 else math.copysign(math.inf, a)
                else:
                    r = math.cosh(a) if abs(a) < 700.0 else math.inf
                stack[sp - 1] = r
        out[c] = stack[0]


@njit(cache=True, error_model="numpy")
def _solve_one(code, arg, consts, cbase, prog_ptr, comp0, dim, y0, t_out, rtol, atol, max_steps, bound, out,
               stiff_test=True):
    """Integrate one trajectory from ``y0`` at ``t_out[0]`` and write the states at the increasing
    times ``t_out`` to ``out``. Returns (status, steps). ``stiff_test``: give up early on a stiff
    trajectory (Hairer's test) rather than creep through it with small steps."""
    n_grid = t_out.shape[0]
    t0 = t_out[0]
    t_end = t_out[n_grid - 1]
    span = t_end - t0
    stack = np.empty(STACK_DEPTH)
    y = y0.copy()
    k1 = np.empty(dim)
    k2 = np.empty(dim)
    k3 = np.empty(dim)
    k4 = np.empty(dim)
    k5 = np.empty(dim)
    k6 = np.empty(dim)
    k7 = np.empty(dim)
    yt = np.empty(dim)
    yn = np.empty(dim)
    for i in range(dim):
        out[0, i] = y[i]
        if not math.isfinite(y[i]):
            return STATUS_NAN, 0
    t = t0
    _rhs(code, arg, consts, cbase, prog_ptr, comp0, dim, y, t, k1, stack)
    d0 = 0.0
    d1 = 0.0
    for i in range(dim):
        if not math.isfinite(k1[i]):
            return STATUS_NAN, 0
        sc = atol + rtol * abs(y[i])
        d0 += (y[i] / sc) ** 2
        d1 += (k1[i] / sc) ** 2
    d0 = math.sqrt(d0 / dim)
    d1 = math.sqrt(d1 / dim)
    h = 0.01 * d0 / d1 if d0 > 1e-5 and d1 > 1e-5 else 1e-6 * span
    h = min(max(h, 1e-10 * span), 0.1 * span)
    dt_grid = span / (n_grid - 1)
    # a derivative that would cross the whole allowed range within one grid interval is a singularity
    dbound = 2.0 * bound / dt_grid
    gi = 1
    steps = 0
    stiff_run = 0  # Hairer's test: h*|lambda| beyond the stability boundary for 15 accepted steps
    calm_run = 0
    while gi < n_grid:
        if steps >= max_steps:
            return STATUS_STIFF, steps
        steps += 1
        last = t + h >= t_end
        if last:
            h = t_end - t
        for i in range(dim):
            yt[i] = y[i] + h * (0.2 * k1[i])
        _rhs(code, arg, consts, cbase, prog_ptr, comp0, dim, yt, t + 0.2 * h, k2, stack)
        for i in range(dim):
            yt[i] = y[i] + h * (3.0 / 40.0 * k1[i] + 9.0 / 40.0 * k2[i])
        _rhs(code, arg, consts, cbase, prog_ptr, comp0, dim, yt, t + 0.3 * h, k3, stack)
        for i in range(dim):
            yt[i] = y[i] + h * (44.0 / 45.0 * k1[i] - 56.0 / 15.0 * k2[i] + 32.0 / 9.0 * k3[i])
        _rhs(code, arg, consts, cbase, prog_ptr, comp0, dim, yt, t + 0.8 * h, k4, stack)
        for i in range(dim):
            yt[i] = y[i] + h * (19372.0 / 6561.0 * k1[i] - 25360.0 / 2187.0 * k2[i]
                                + 64448.0 / 6561.0 * k3[i] - 212.0 / 729.0 * k4[i])
        _rhs(code, arg, consts, cbase, prog_ptr, comp0, dim, yt, t + 8.0 / 9.0 * h, k5, stack)
        for i in range(dim):
            yt[i] = y[i] + h * (9017.0 / 3168.0 * k1[i] - 355.0 / 33.0 * k2[i] + 46732.0 / 5247.0 * k3[i]
                                + 49.0 / 176.0 * k4[i] - 5103.0 / 18656.0 * k5[i])
        _rhs(code, arg, consts, cbase, prog_ptr, comp0, dim, yt, t + h, k6, stack)
        for i in range(dim):
            yn[i] = y[i] + h * (35.0 / 384.0 * k1[i] + 500.0 / 1113.0 * k3[i] + 125.0 / 192.0 * k4[i]
                                - 2187.0 / 6784.0 * k5[i] + 11.0 / 84.0 * k6[i])
        _rhs(code, arg, consts, cbase, prog_ptr, comp0, dim, yn, t + h, k7, stack)
        err = 0.0
        for i in range(dim):
            e = h * (71.0 / 57600.0 * k1[i] - 71.0 / 16695.0 * k3[i] + 71.0 / 1920.0 * k4[i]
                     - 17253.0 / 339200.0 * k5[i] + 22.0 / 525.0 * k6[i] - 1.0 / 40.0 * k7[i])
            sc = atol + rtol * max(abs(y[i]), abs(yn[i]))
            err += (e / sc) ** 2
        err = math.sqrt(err / dim)
        if err <= 1.0:
            num = 0.0
            den = 0.0
            for i in range(dim):
                num += (k7[i] - k6[i]) ** 2
                den += (yn[i] - yt[i]) ** 2
            if stiff_test and den > 0.0 and h * h * num > 10.5625 * den:  # (3.25)^2
                calm_run = 0
                stiff_run += 1
                if stiff_run >= 15:
                    return STATUS_STIFF, steps
            else:
                calm_run += 1
                if calm_run >= 6:
                    stiff_run = 0
            t_new = t_end if last else t + h
            # dense output on the grid points inside (t, t_new]
            while gi < n_grid and t_out[gi] - t0 <= (t_new - t0) * (1.0 + 1e-12):
                s = (t_out[gi] - t) / h
                s2 = s * s
                s3 = s2 * s
                h00 = 2.0 * s3 - 3.0 * s2 + 1.0
                h10 = s3 - 2.0 * s2 + s
                h01 = -2.0 * s3 + 3.0 * s2
                h11 = s3 - s2
                for i in range(dim):
                    out[gi, i] = h00 * y[i] + h10 * h * k1[i] + h01 * yn[i] + h11 * h * k7[i]
                gi += 1
            t = t_new
            for i in range(dim):
                y[i] = yn[i]
                k1[i] = k7[i]
                if not math.isfinite(y[i]) or not math.isfinite(k1[i]):
                    return STATUS_NAN, steps
                if abs(y[i]) > bound or abs(k1[i]) > dbound:
                    return STATUS_BLOWUP, steps
            fac = 5.0 if err == 0.0 else min(5.0, max(0.2, 0.9 * err ** -0.2))
        else:
            fac = 0.2 if not math.isfinite(err) else max(0.2, 0.9 * err ** -0.2)
        h = h * fac
        if h < 1e-12 * span:
            return STATUS_STIFF, steps
    return STATUS_OK, steps


@njit(cache=True)
def _is_flat(x, dim):
    """True when some component barely moves over the whole grid (its law is then unidentifiable)."""
    for i in range(dim):
        lo = x[0, i]
        hi = lo
        for g in range(x.shape[0]):
            lo = min(lo, x[g, i])
            hi = max(hi, x[g, i])
        if hi - lo <= 1e-3 * max(abs(lo), abs(hi)) + 1e-8:
            return True
    return False


@njit(cache=True)
def _max_deviation(x, ref, dim):
    """Largest |x - ref| in units of (range of x + 1e-3): the verification criterion."""
    worst = 0.0
    for i in range(dim):
        lo = x[0, i]
        hi = lo
        for g in range(x.shape[0]):
            lo = min(lo, x[g, i])
            hi = max(hi, x[g, i])
        scale = hi - lo + 1e-3
        for g in range(x.shape[0]):
            worst = max(worst, abs(x[g, i] - ref[g, i]) / scale)
    return worst


@njit(cache=True, nogil=True, error_model="numpy")
def _solve_batch(code, arg, consts, const_ptr, prog_ptr, comp_ptr, traj_sys, dims, x0, t_end, n_grid,
                 rtol, atol, max_steps, bound, verify_factor, out, status, steps):
    n = traj_sys.shape[0]
    check = np.empty((n_grid, out.shape[2]))
    for j in range(n):
        s = traj_sys[j]
        d = dims[s]
        t_out = np.linspace(0.0, t_end[s], n_grid)
        st, ns = _solve_one(code, arg, consts, const_ptr[s], prog_ptr, comp_ptr[s], d, x0[j, :d], t_out,
                            rtol, atol, max_steps, bound, out[j])
        steps[j] = ns
        if st == STATUS_OK and _is_flat(out[j], d):
            st = STATUS_FLAT
        if st == STATUS_OK and verify_factor > 0.0:
            st2, ns2 = _solve_one(code, arg, consts, const_ptr[s], prog_ptr, comp_ptr[s], d, x0[j, :d],
                                  t_out, rtol * verify_factor, atol * verify_factor, max_steps, bound, check)
            steps[j] += ns2
            if st2 != STATUS_OK or _max_deviation(out[j], check, d) > 1e-3:
                st = STATUS_INACCURATE
        status[j] = st


@njit(cache=True, nogil=True, error_model="numpy")
def _solve_batch_at(code, arg, consts, const_ptr, prog_ptr, comp_ptr, dims, x0, t_out, rtol, atol, max_steps,
                    bound, out, status, steps):
    for j in range(x0.shape[0]):
        st, ns = _solve_one(code, arg, consts, const_ptr[j], prog_ptr, comp_ptr[j], dims[j], x0[j, :dims[j]], t_out,
                            rtol, atol, max_steps, bound, out[j], False)
        status[j] = st
        steps[j] = ns


@dataclass
class Solutions:
    """Dense solutions of a batch: ``x[j, g, :dims[traj_sys[j]]]`` at ``t_end[traj_sys[j]] * g / (n_grid-1)``."""

    x: np.ndarray
    status: np.ndarray
    steps: np.ndarray


def solve_batch(batch, x0: np.ndarray, traj_sys: np.ndarray, n_grid: int, rtol: float, atol: float,
                max_steps: int, bound: float, verify_factor: float = 100.0) -> Solutions:
    """Integrate trajectories ``j`` of systems ``traj_sys[j]`` from ``x0[j]`` (see data_gen.program.Batch).

    ``verify_factor`` > 0 solves each trajectory a second time with tolerances that much looser and
    rejects it (status ``inaccurate``) when the two differ by more than 1e-3 of a component's range.
    """
    n = len(traj_sys)
    max_dim = x0.shape[1]
    out = np.zeros((n, n_grid, max_dim))
    status = np.zeros(n, dtype=np.int64)
    steps = np.zeros(n, dtype=np.int64)
    _solve_batch(batch.code, batch.arg, batch.consts, batch.const_ptr, batch.prog_ptr, batch.comp_ptr,
                 np.ascontiguousarray(traj_sys, dtype=np.int64), batch.dims, np.ascontiguousarray(x0, dtype=np.float64),
                 batch.t_end, n_grid, rtol, atol, max_steps, bound, verify_factor, out, status, steps)
    return Solutions(out, status, steps)


def solve_at(batch, x0: np.ndarray, t_out: np.ndarray, rtol: float = 1e-6, atol: float = 1e-9,
             max_steps: int = 5_000, bound: float = 1e8) -> Solutions:
    """Integrate system ``j`` of the batch from ``x0[j]`` at ``t_out[0]`` and report it at the increasing
    times ``t_out`` (shared by all; the batch's ``t_end`` is not used): constant refitting simulates
    one candidate under many sets of constants at the observed times in a single call. No stiffness
    test and no verification solve: status ``stiff`` here means ``max_steps`` ran out."""
    n = len(x0)
    out = np.zeros((n, len(t_out), x0.shape[1]))
    status = np.zeros(n, dtype=np.int64)
    steps = np.zeros(n, dtype=np.int64)
    _solve_batch_at(batch.code, batch.arg, batch.consts, batch.const_ptr, batch.prog_ptr, batch.comp_ptr,
                    batch.dims, np.ascontiguousarray(x0, dtype=np.float64),
                    np.ascontiguousarray(t_out, dtype=np.float64), rtol, atol, max_steps, bound, out, status, steps)
    return Solutions(out, status, steps)
