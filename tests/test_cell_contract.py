"""The contract of a cell of one's own: what a subclass must define says so by name,
registration refuses what it cannot save, and a wired cell needs a built wiring."""

import pytest

from ncps_mlx.cells import LTCCell, WiredCfCCell
from ncps_mlx.cells.base import CELLS, Cell, register_cell
from ncps_mlx.errors import WiringError, see
from ncps_mlx.wirings import AutoNCP


class Bare(Cell):
    """A cell that defines nothing yet."""


@pytest.mark.parametrize(
    "member, message",
    [
        ("input_size", "[Bare] define the input_size property"),
        ("state_size", "[Bare] define the state_size property"),
        ("output_size", "[Bare] define the output_size property"),
    ],
)
def test_each_size_a_cell_must_define_is_named(member, message):
    with pytest.raises(NotImplementedError) as caught:
        getattr(Bare(), member)
    assert str(caught.value) == message


def test_a_cell_without_step_or_config_says_what_to_define():
    cell = Bare()
    with pytest.raises(NotImplementedError, match=r"^\[Bare\] define step\(\)$"):
        cell.step(None, None, None, 1.0)
    with pytest.raises(NotImplementedError) as caught:
        cell.get_config()
    message = str(caught.value)
    assert message.startswith("[Bare] define get_config() returning the constructor arguments")
    assert "or save the weights only with model.save_weights(path)" in message
    assert message.endswith(see("custom-cell"))
    # What a cell need not define has a default: no cost estimate, no timespan bounds.
    assert cell.footprint() is None and cell.timespan_bounds() is None


@pytest.fixture
def registry():
    """CELLS as it was before the test."""
    saved = dict(CELLS)
    yield CELLS
    CELLS.clear()
    CELLS.update(saved)


@pytest.mark.parametrize("thing", [Bare(), int, "Bare"], ids=["an instance", "int", "a name"])
def test_only_cell_classes_are_registered(registry, thing):
    with pytest.raises(ValueError, match=r"^\[register_cell\] expected a Cell subclass but got"):
        register_cell(thing)


def _cell_class(module: str) -> type[Cell]:
    return type("Custom", (Bare,), {"__module__": module, "__qualname__": "Custom"})


def test_a_class_of_another_module_may_not_take_a_registered_name(registry):
    first = register_cell(_cell_class("lab.cells"))
    with pytest.raises(ValueError) as caught:
        register_cell(_cell_class("other.cells"))
    assert str(caught.value) == (
        "[register_cell] another class named 'Custom' is registered (lab.cells); give the "
        "cell a unique class name"
    )
    assert registry["Custom"] is first


def test_defining_a_class_again_replaces_its_registration(registry):
    register_cell(_cell_class("notebook"))
    again = register_cell(_cell_class("notebook"))  # a re-run notebook cell
    assert registry["Custom"] is again


@pytest.mark.parametrize(
    "make",
    [lambda: LTCCell("AutoNCP"), lambda: WiredCfCCell(4, {"units": 8})],
    ids=["LTCCell", "WiredCfCCell"],
)
def test_a_wired_cell_needs_a_wiring(make):
    with pytest.raises(ValueError, match=r"^\[(LTCCell|WiredCfCCell)\] 'wiring' must be a Wiring"):
        make()


def test_a_wired_cell_needs_the_wiring_built_or_the_input_size():
    with pytest.raises(WiringError) as caught:
        LTCCell(AutoNCP(8, 2))
    assert str(caught.value).startswith(
        "[LTCCell] the wiring is not built: pass the input size or call wiring.build(input_dim)"
    )
    cell = LTCCell(AutoNCP(8, 2), in_features=3)  # the input size builds it
    assert (cell.input_size, cell.state_size, cell.output_size) == (3, 8, 2)
