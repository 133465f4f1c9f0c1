"""Probe schedules: ``every`` and ``log_spaced`` against hand-written step lists and their defining properties."""

import numpy as np
import pytest

from implicitlab.train import every, log_spaced


# ------------------------------------------------------------------------------------ every ---
@pytest.mark.parametrize(
    "k, num_steps, expected",
    [
        (3, 10, [0, 3, 6, 9, 10]),  # the last step is added
        (5, 10, [0, 5, 10]),  # … but not twice when k divides num_steps
        (1, 4, [0, 1, 2, 3, 4]),
        (20, 10, [0, 10]),  # k > num_steps: first and last only
        (7, 0, [0]),  # no training: step 0 only
    ],
)
def test_every_by_hand(k, num_steps, expected):
    steps = every(k, num_steps)
    assert steps.dtype == np.int64
    assert steps.tolist() == expected


@pytest.mark.parametrize("k, num_steps", [(1, 1), (4, 37), (10, 1000), (999, 1000)])
def test_every_is_the_multiples_of_k_plus_the_last_step(k, num_steps):
    steps = every(k, num_steps)
    assert steps.tolist() == sorted({s for s in range(num_steps + 1) if s % k == 0} | {num_steps})


@pytest.mark.parametrize("k", [0, -3])
def test_every_refuses_a_non_positive_interval(k):
    with pytest.raises(ValueError, match="≥ 1"):
        every(k, 10)


# ------------------------------------------------------------------------------- log_spaced ---
def test_log_spaced_by_hand():
    # 7 points from 1 to 10^6 are the powers of ten; 3 points from 10 to 1000 are 10, 100, 1000
    assert log_spaced(10**6, 7).tolist() == [0, 1, 10, 100, 1_000, 10_000, 100_000, 1_000_000]
    assert log_spaced(1000, 3, first=10).tolist() == [0, 10, 100, 1000]
    # more points than steps: every step once
    assert log_spaced(5).tolist() == [0, 1, 2, 3, 4, 5]
    # nothing to train: step 0 only
    assert log_spaced(0).tolist() == [0]
    assert log_spaced(-4).tolist() == [0]
    # first < 1 is read as 1 (a log grid cannot start at 0; step 0 is always there)
    assert log_spaced(100, 3, first=0).tolist() == [0, 1, 10, 100]


@pytest.mark.parametrize("num_steps, num", [(1, 50), (10, 50), (1000, 20), (20_000, 60), (10**7, 50)])
def test_log_spaced_properties(num_steps, num):
    steps = log_spaced(num_steps, num)
    assert steps.dtype == np.int64
    assert steps[0] == 0 and steps[-1] == num_steps  # first and last step always measured
    assert np.all(np.diff(steps) > 0)  # sorted, no step twice
    assert len(steps) <= num + 1
    if num_steps == 1:
        assert steps.tolist() == [0, 1]
        return
    # geometric: the grid points ρ^j (j = 0…num−1, ρ = N^{1/(num−1)}) rounded to integers. Above
    # T = 2/(ρ − 1) consecutive points are ≥ 2 apart, so none merge and consecutive ratios are ρ up
    # to the rounding of both ends; below T several may round to one step.
    rho = num_steps ** (1 / (num - 1))
    T = 2 / (rho - 1)
    tail = steps[steps >= T]
    expected_tail = sum(rho**j >= T for j in range(num))
    assert abs(len(tail) - expected_tail) <= 1  # a point at T itself may round either way
    ratios = tail[1:] / tail[:-1]
    bound = (1 + 0.5 / tail[:-1]) / (1 - 0.5 / tail[1:])
    assert np.all(ratios <= rho * bound * (1 + 1e-12))
    assert np.all(ratios >= rho / bound / (1 + 1e-12))


def test_log_spaced_never_goes_past_the_last_step():
    steps = log_spaced(5, 10, first=100)
    assert steps.max() == 5
