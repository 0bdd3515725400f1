"""cast_like: the one place aggregation results get their model tensor's shape and dtype back."""

import numpy as np

from fedloom.algorithms.casting import cast_like, float64


def test_0d_results_stay_arrays_with_the_reference_dtype():
    scalar = np.asarray(2.0) * 1.25  # numpy arithmetic on a 0-d array gives a numpy scalar
    assert not isinstance(scalar, np.ndarray)
    got = cast_like(scalar, np.array(1, np.int64))
    assert isinstance(got, np.ndarray) and got.shape == () and got.dtype == np.int64 and got == 2  # rint(2.5) = 2
    assert isinstance(float64(scalar), np.ndarray) and float64(scalar).shape == ()
    assert cast_like(np.float64(0.75), np.array(0.0, np.float32)).dtype == np.float32


def test_integers_are_rounded_and_kept_in_range():
    ref = np.zeros(3, np.int64)
    top = np.iinfo(np.int64).max
    got = cast_like(np.array([2.6, -2.6, float(top)]), ref)  # float(top) is 2**63, one past int64's range
    assert got[0] == 3 and got[1] == -3 and got[2] > 0 and got[2] >= top - 1024
    assert list(cast_like(np.array([300.0, -300.0]), np.zeros(2, np.int8))) == [127, -128]
    assert list(cast_like(np.array([0.2, 0.7]), np.zeros(2, bool))) == [False, True]
    exact = np.array([2**62 + 1], np.int64)
    assert cast_like(exact, exact)[0] == 2**62 + 1  # integer input is not sent through float64


def test_float_results_beyond_the_dtype_saturate_instead_of_becoming_inf():
    assert cast_like(np.array([1e39, -1e39]), np.zeros(2, np.float32)).tolist() == [
        float(np.finfo(np.float32).max),
        -float(np.finfo(np.float32).max),
    ]
    from fedloom.algorithms.casting import saturate

    with np.errstate(over="ignore"):
        step = np.array([1e308]) - np.array([-1e308])
    assert saturate(step)[0] == np.finfo(np.float64).max and np.isnan(saturate(np.nan))
