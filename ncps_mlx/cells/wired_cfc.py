"""CfC cells stacked along the layers of a wiring (an NCP)."""

from typing import Any

import mlx.core as mx
import numpy as np

from ..wirings import Wiring
from .base import Consts, Footprint, WiredCell, register_cell
from .cfc import CfCCell, CfCMode


def layer_connectivity(wiring: Wiring, layer: int, strict: bool) -> np.ndarray:
    """Signed ``(inputs + n_l, n_l)`` connectivity of one wiring layer.

    The inputs are the sensory features for layer 0 and the previous layer's neurons
    otherwise. The reference connects every neuron of a layer to every other one of the
    same layer; ``strict`` takes that block from the wiring's adjacency instead.
    """
    neurons = wiring.get_neurons_of_layer(layer)
    if layer == 0:
        incoming = wiring.sensory_adjacency_matrix[:, neurons]
    else:
        previous = wiring.get_neurons_of_layer(layer - 1)
        incoming = wiring.adjacency_matrix[np.ix_(previous, neurons)]
    if strict:
        recurrent = wiring.adjacency_matrix[np.ix_(neurons, neurons)]
    else:
        recurrent = np.ones((len(neurons), len(neurons)), dtype=incoming.dtype)
    return np.concatenate([incoming, recurrent], axis=0)


@register_cell
class WiredCfCCell(WiredCell):
    """A CfC cell per wiring layer (inter, command, motor for an NCP).

    Layer ``l`` reads layer ``l-1``'s new output (the sensory input for layer 0) and its
    own previous state; the state is the layers' states concatenated in layer order and
    the output is the last layer's new state. Identical to ``ncps.torch.WiredCfCCell``
    (ncps 1.0.1), including its parameter names ``layer_0``, ``layer_1``, ...

    The reference is not faithful to the wiring: only ``ff1``/``ff2`` are masked,
    recurrence inside a layer is dense and synapse polarity is dropped. Those numerics are
    kept by default so ncps weights load unchanged. With ``strict_wiring=True`` every head
    is masked, recurrence inside a layer follows the adjacency matrix (so an NCP's
    recurrent command synapses are the only intra-layer ones), and ``ff1``/``ff2`` use
    ``|W|`` times the signed adjacency so each synapse keeps its polarity.

    Args:
        input_size (int, optional): Number of input features; builds the wiring. Pass
            ``None`` for a wiring that is already built.
        wiring (Wiring): The wiring.
        mode (str): CfC mode, see [`CfCCell`][ncps_mlx.cells.CfCCell]. Default: ``"default"``.
        strict_wiring (bool): Follow the wiring exactly (see above). Default: ``False``.
    """

    def __init__(
        self,
        input_size: int | None,
        wiring: Wiring,
        mode: CfCMode = "default",
        *,
        strict_wiring: bool = False,
    ):
        super().__init__()
        self._attach_wiring(wiring, input_size)
        self.mode = mode
        self.strict_wiring = bool(strict_wiring)
        in_features = wiring.input_dim
        for index in range(wiring.num_layers):
            connectivity = layer_connectivity(wiring, index, self.strict_wiring)
            layer = CfCCell(in_features, connectivity.shape[1], mode, "lecun_tanh", 0, 0, 0.0)
            layer.set_head_masks(*self._masks_for(layer, connectivity))
            setattr(self, f"layer_{index}", layer)
            in_features = connectivity.shape[1]

    def _masks_for(self, layer: CfCCell, connectivity: np.ndarray):
        signed = mx.array(connectivity.T.astype(np.float32))
        unsigned = mx.abs(signed)
        if not self.strict_wiring:
            return {"ff1": unsigned, "ff2": unsigned}, ()
        masks = {name: unsigned for name in layer.head_names}
        polar = tuple(name for name in ("ff1", "ff2") if name in masks)
        masks.update({name: signed for name in polar})
        return masks, polar

    @property
    def layers(self) -> list[CfCCell]:
        """The CfC cell of each wiring layer, in layer order (`layer_0`, `layer_1`, ...)."""
        return [getattr(self, f"layer_{i}") for i in range(self._wiring.num_layers)]

    @property
    def output_size(self) -> int:
        """Size of the output `y`: the last layer's neurons.

        Those are the motor neurons of an NCP, but every neuron of a one-layer wiring
        (`FullyConnected`, `Random`), as in the reference.
        """
        return self.layer_sizes[-1]

    @property
    def layer_sizes(self) -> list[int]:
        """Neurons of each wiring layer, in layer order; they sum to `state_size`."""
        return [len(self._wiring.get_neurons_of_layer(i)) for i in range(self._wiring.num_layers)]

    @property
    def num_layers(self) -> int:
        """Number of CfC layers: the wiring's ``num_layers``, as in ncps."""
        return self._wiring.num_layers

    def state_neurons(self) -> np.ndarray:
        """The wiring neuron each entry of the state `h` holds: the neurons of each layer,
        in layer order.

        For an NCP that is inter, command, motor, while the wiring numbers the motor
        neurons first: entry `k` of `h` is neuron `state_neurons()[k]`, not neuron `k`.

        Returns:
            Integer array of length `state_size`.
        """
        layers = [self._wiring.get_neurons_of_layer(i) for i in range(self._wiring.num_layers)]
        return np.concatenate(layers).astype(np.int64)

    def derive(self) -> Consts:
        """Each layer's [`CfCCell.derive`][ncps_mlx.cells.CfCCell.derive], in layer order."""
        return [layer.derive() for layer in self.layers]

    def project(self, consts: Consts, x: mx.array) -> mx.array:
        """The first layer's [`CfCCell.project`][ncps_mlx.cells.CfCCell.project]: only it
        reads the input."""
        return self.layers[0].project(consts[0], x)

    def step(
        self, consts: Consts, inputs: mx.array, h: mx.array, dt: mx.array | float
    ) -> tuple[mx.array, mx.array]:
        """One step of every layer in order, each reading the previous layer's new state
        (the first, the projected `inputs`) and its own slice of `h`.

        Returns:
            `(y, h_next)`: the last layer's new state `(B, output_size)`, and all layers'
            new states concatenated `(B, state_size)`.
        """
        splits = np.cumsum(self.layer_sizes)[:-1].tolist()
        states = mx.split(h, splits, axis=-1)
        new_states = []
        for index, layer in enumerate(self.layers):
            layer_consts = consts[index]
            if index > 0:
                inputs = layer.project(layer_consts, new_states[-1])
            out, _ = layer.step(layer_consts, inputs, states[index], dt)
            new_states.append(out)
        return new_states[-1], mx.concatenate(new_states, axis=-1)

    def footprint(self) -> Footprint:
        """The layers' work summed: the first layer's input share is hoisted, the others
        read the previous layer's new state inside the loop."""
        total = Footprint()
        for index, layer in enumerate(self.layers):
            part = layer.footprint()
            if index > 0:
                part = Footprint(
                    loop_products=part.hoisted_products + part.loop_products,
                    elementwise=part.elementwise,
                    transcendentals=part.transcendentals,
                    saved_values=part.saved_values,
                )
            total = total + part
        return total

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this cell, the wiring (built) as its
        config."""
        return {
            "input_size": None,
            "wiring": self._wiring.get_config(),
            "mode": self.mode,
            "strict_wiring": self.strict_wiring,
        }
