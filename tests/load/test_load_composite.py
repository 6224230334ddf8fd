"""Composite kernels: the median and best-pixel rules against NumPy references."""

from __future__ import annotations

import warnings

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from glacierscale.load.composite import best_block, count_block, median_block


@given(st.integers(1, 20).flatmap(lambda t: st.tuples(
    arrays(np.float32, (t, 3, 4), elements=st.floats(-1, 2, width=32) | st.just(np.nan)),
    arrays(bool, (t, 3, 4)))))
@settings(max_examples=200, deadline=None)
def test_median_equals_nanmedian_of_valid_observations(case) -> None:
    values, valid = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = np.nanmedian(np.where(valid, values, np.nan), axis=0)
    np.testing.assert_allclose(median_block(values, valid), ref, rtol=1e-6, equal_nan=True)


def test_best_takes_the_first_valid_and_count_saturates() -> None:
    values = np.array([[[1.0, np.nan]], [[2.0, 3.0]]], dtype=np.float32)
    valid = np.array([[[False, True]], [[True, True]]])
    np.testing.assert_array_equal(best_block(values, valid), [[2.0, 3.0]])
    np.testing.assert_array_equal(best_block(values, np.zeros_like(valid)), [[np.nan, np.nan]])
    assert count_block(np.ones((300, 1, 1), bool))[0, 0] == 255
