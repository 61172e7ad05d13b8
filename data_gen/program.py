"""Compile expression trees into the postfix stack programs the batched integrator runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from data_gen.expressions import CONST, TIME, Tree, is_var, literal_value
from data_gen.integrate import OP_CONST, OP_TIME, OP_VAR, OPCODES


@dataclass(frozen=True)
class Program:
    """One system's components as postfix code. ``arg`` of a CONST is a slot: free constants first
    (prefix order, all components in turn), then the fixed literals in ``literals``."""

    code: np.ndarray
    arg: np.ndarray
    comp_len: tuple[int, ...]
    n_free: int
    literals: np.ndarray


def compile_system(components: Sequence[Tree]) -> Program:
    code: list[int] = []
    arg: list[int] = []
    lit_slots: list[tuple[int, float]] = []  # (position in code, value)
    lens = []
    n_free = 0

    def emit(node: Tree) -> None:
        nonlocal n_free
        if isinstance(node, str):
            if node == CONST:
                code.append(OP_CONST)
                arg.append(n_free)
                n_free += 1
            elif node == TIME:
                code.append(OP_TIME)
                arg.append(0)
            elif is_var(node):
                code.append(OP_VAR)
                arg.append(int(node[2:]))
            else:
                code.append(OP_CONST)
                arg.append(-1)
                lit_slots.append((len(code) - 1, literal_value(node)))
            return
        for child in node[1:]:
            emit(child)
        code.append(OPCODES[node[0]])
        arg.append(0)

    for tree in components:
        start = len(code)
        emit(tree)
        lens.append(len(code) - start)
    for i, (pos, _) in enumerate(lit_slots):
        arg[pos] = n_free + i
    return Program(np.array(code, dtype=np.int64), np.array(arg, dtype=np.int64), tuple(lens), n_free,
                   np.array([v for _, v in lit_slots], dtype=np.float64))


@dataclass
class Batch:
    """Many systems' programs concatenated, in the layout ``data_gen.integrate.solve_batch`` reads."""

    code: np.ndarray
    arg: np.ndarray
    consts: np.ndarray
    const_ptr: np.ndarray  # first const slot of each system
    prog_ptr: np.ndarray  # start of each component's code (+ end sentinel)
    comp_ptr: np.ndarray  # first component of each system
    dims: np.ndarray
    t_end: np.ndarray


def build_batch(programs: Sequence[Program], free_values: Sequence[np.ndarray], t_end: np.ndarray) -> Batch:
    """One system per (program, row of free constants). ``free_values[i]`` has shape (k_i, n_free_i):
    program i is instantiated k_i times, each with its own constants."""
    codes, args, consts, const_ptr, lens, comp_ptr, dims = [], [], [], [], [], [], []
    n_comp = 0
    n_const = 0
    for prog, values in zip(programs, free_values):
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != prog.n_free:
            raise ValueError(f"expected constants of shape (k, {prog.n_free}), got {values.shape}")
        k = values.shape[0]
        n_slots = prog.n_free + len(prog.literals)
        codes.append(np.tile(prog.code, k))
        args.append(np.tile(prog.arg, k))
        consts.append(np.hstack([values, np.broadcast_to(prog.literals, (k, len(prog.literals)))]).ravel())
        const_ptr.append(n_const + n_slots * np.arange(k))
        n_const += n_slots * k
        lens.extend(prog.comp_len * k)
        dim = len(prog.comp_len)
        comp_ptr.append(n_comp + dim * np.arange(k))
        n_comp += dim * k
        dims.append(np.full(k, dim))
    prog_ptr = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=prog_ptr[1:])

    def cat(parts, dtype):
        return np.ascontiguousarray(np.concatenate(parts) if parts else np.zeros(0), dtype=dtype)

    return Batch(cat(codes, np.int64), cat(args, np.int64), cat(consts, np.float64), cat(const_ptr, np.int64),
                 prog_ptr, cat(comp_ptr, np.int64), cat(dims, np.int64),
                 np.ascontiguousarray(t_end, dtype=np.float64))
