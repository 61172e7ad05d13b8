"""Shared input validation (odeformer/validation.py): messages name the trajectory, row and column."""

import numpy as np
import pytest

from odeformer.validation import LIMITS, MAX_ABS_VALUE, InputError, Limits, check_limits, prepare

T = np.linspace(0, 5, 20)


@pytest.mark.parametrize("t, x, kwargs, fragment", [
    (np.r_[T[:5], T[4]], np.ones(6), {}, "trajectory 1: duplicate time t=1.0526"),
    ([T, np.r_[T[:5], T[4]]], [np.ones(20), np.ones(6)], {}, "trajectory 2: duplicate time"),
    (T, np.r_[np.ones(19), 1e300], {}, "trajectory 1: x[19, 0] = 1e+300 is larger in magnitude than 1e+12"),
    (T, np.c_[np.ones(20), np.r_[np.ones(3), -5e12, np.ones(16)]], {"variables": ["S", "I"]},
     "trajectory 1: x[3, 1] (I) = -5e+12"),
    (np.r_[T[:19], 1e300], np.ones(20), {}, "trajectory 1: t[19] = 1e+300 is larger"),
    (T, np.r_[np.ones(19), np.nan], {"variables": ["N"]}, "trajectory 1: x[19, 0] (N) is not finite"),
])
def test_prepare_names_trajectory_row_and_column(t, x, kwargs, fragment):
    with pytest.raises(InputError) as e:
        prepare(t, x, 4, **kwargs)
    assert fragment in str(e.value)


def test_largest_magnitude_is_accepted():
    ((t, x),) = prepare(T, np.full(20, MAX_ABS_VALUE), 4)
    assert x.max() == MAX_ABS_VALUE


def test_check_limits():
    check_limits([(T, None)] * 3)
    small = Limits(max_points_per_trajectory=10, max_total_points=25, max_trajectories=2)
    with pytest.raises(InputError, match="trajectory 1: 20 points; at most 10 per trajectory"):
        check_limits([(T, None)], limits=small)
    with pytest.raises(InputError, match="trajectory 'b': 20 points"):
        check_limits([(T[:5], None), (T, None)], labels=["trajectory 'a'", "trajectory 'b'"], limits=small)
    with pytest.raises(InputError, match="^20 points; at most 10"):
        check_limits([(T, None)], labels=[""], limits=small)
    with pytest.raises(InputError, match="3 trajectories; at most 2"):
        check_limits([(T[:5], None)] * 3, limits=small)
    with pytest.raises(InputError, match="30 points in all; at most 25"):
        check_limits([(T[:10], None)] * 3, limits=Limits(10, 25, 4))
    assert LIMITS.as_dict()["max_abs_value"] == 1e12
