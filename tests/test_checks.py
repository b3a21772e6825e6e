"""The shared argument checks: what they accept, and the words of what they refuse."""

import math

import pytest

from ncps_mlx._checks import check_choice, check_int, check_number


@pytest.mark.parametrize(
    "bounds, value, allowed",
    [
        ({"low": 0, "below": 1}, 1.0, "in [0, 1)"),
        ({"above": 0, "high": 2.5}, 0, "in (0, 2.5]"),
        ({"low": 0}, -1, ">= 0"),
        ({"above": 0}, 0.0, "> 0"),
        ({"high": 10}, 10.5, "<= 10"),
        ({"below": 1e-3}, 0.5, "< 0.001"),
        ({}, math.inf, "that is finite"),
        ({}, math.nan, "that is finite"),
        ({"low": 0}, True, ">= 0"),  # a bool is not a number here
        ({"low": 0}, "1", ">= 0"),
    ],
)
def test_a_number_outside_its_bounds_is_refused_naming_them(bounds, value, allowed):
    expected = f"[Owner] 'rate' must be a number {allowed} but got {value!r}"
    with pytest.raises(ValueError) as caught:
        check_number("Owner", "rate", value, **bounds)
    assert str(caught.value) == expected


@pytest.mark.parametrize(
    "bounds, value",
    [
        ({"low": 0, "below": 1}, 0),
        ({"above": 0, "high": 2.5}, 2.5),
        ({"high": 10}, -1e9),
        ({"below": 1e-3}, 0),
        ({}, -7),
    ],
)
def test_a_number_inside_its_bounds_comes_back_as_a_float(bounds, value):
    result = check_number("Owner", "rate", value, **bounds)
    assert result == value and type(result) is float


def test_an_int_outside_its_range_names_the_range():
    with pytest.raises(ValueError, match=r"^\[Owner\] 'count' must be an int in 1..8 but got 9$"):
        check_int("Owner", "count", 9, high=8)
    with pytest.raises(ValueError, match=r"^\[Owner\] 'count' must be an int >= 1 but got 2.0$"):
        check_int("Owner", "count", 2.0)
    assert check_int("Owner", "count", 8, high=8) == 8


@pytest.mark.parametrize("value", ["cubic", ["linear"], {"mode": "linear"}])
def test_a_choice_not_among_the_choices_lists_them(value):
    with pytest.raises(ValueError) as caught:
        check_choice("Owner", "mode", value, ("linear", "cosine"))
    assert str(caught.value) == (
        f"[Owner] unknown mode {value!r}; choose one of ['linear', 'cosine']"
    )


def test_a_choice_among_the_choices_comes_back():
    assert check_choice("Owner", "mode", "cosine", iter(("linear", "cosine"))) == "cosine"
