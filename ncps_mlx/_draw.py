"""Drawing a wiring with matplotlib: one column per neuron kind, sensory to motor."""

from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from .wirings import KINDS, Wiring

NEURON_COLORS = {
    "sensory": "tab:olive",
    "inter": "tab:blue",
    "command": "tab:cyan",
    "motor": "tab:orange",
}
SYNAPSE_COLORS = {"excitatory": "tab:green", "inhibitory": "tab:red"}
Layout = dict[tuple[str, int], tuple[str, float, float]]


def column_layout(wiring: Wiring) -> Layout:
    """Maps each node to (kind, x, y): one column per kind, sensory to motor."""
    columns: dict[str, list] = {kind: [] for kind in KINDS}
    columns["sensory"] = [("sensory", i) for i in range(wiring.input_dim or 0)]
    for i in range(wiring.units):
        columns[wiring.get_type_of_neuron(i)].append(("neuron", i))
    used = {kind: nodes for kind, nodes in columns.items() if nodes}
    scale = max(max(len(nodes) for nodes in used.values()) - 1, 1)
    layout = {}
    for x, (kind, nodes) in enumerate(used.items()):
        for row, node in enumerate(nodes):
            # Centre every column vertically; the tallest spans [-0.5, 0.5].
            layout[node] = (kind, float(x), ((len(nodes) - 1) / 2 - row) / scale)
    return layout


def draw_wiring(
    wiring: Wiring,
    ax: Any = None,
    *,
    neuron_colors: dict[str, str] | None = None,
    synapse_colors: dict[str, str] | str | None = None,
    draw_labels: bool = False,
    legend: bool = True,
    node_size: float = 120.0,
    node_colors: dict[tuple[str, int], Any] | None = None,
) -> Any:
    """See [`ncps_mlx.wirings.Wiring.draw`][ncps_mlx.wirings.Wiring.draw].

    ``node_colors`` gives nodes a colour of their own over their kind's, keyed like the
    nodes of ``column_layout`` (``("sensory", i)`` or ``("neuron", i)``); they are then
    outlined, so that pale colours stay visible on the white background.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 6))
    colors = {**NEURON_COLORS, **(neuron_colors or {})}
    if isinstance(synapse_colors, str):
        synapse_colors = {"excitatory": synapse_colors, "inhibitory": synapse_colors}
    layout = column_layout(wiring)
    polarity_colors = {**SYNAPSE_COLORS, **(synapse_colors or {})}
    _draw_edges(wiring, ax, layout, polarity_colors, node_size)
    _draw_nodes(ax, layout, colors, node_size, draw_labels, node_colors)
    ax.margins(0.1)
    if legend:
        # The neuron kinds come from the scatter labels; the arrows carry no label of their
        # own, so their colours get entries here.
        handles, _ = ax.get_legend_handles_labels()
        handles += _synapse_handles(wiring, polarity_colors, node_size)
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    ax.set_axis_off()
    return ax


def _synapse_handles(wiring: Wiring, colors: dict[str, str], node_size: float) -> list:
    """Legend entries for the synapse polarities the wiring has (one entry when both are
    drawn in the same colour) and for the ring of a neuron's synapse onto itself."""
    from matplotlib.colors import to_rgba
    from matplotlib.lines import Line2D

    signs = np.concatenate(
        [wiring.sensory_adjacency_matrix.ravel(), wiring.adjacency_matrix.ravel()]
    )
    present = [p for p, sign in (("excitatory", 1), ("inhibitory", -1)) if np.any(signs == sign)]
    if len(present) == 2 and to_rgba(colors["excitatory"]) == to_rgba(colors["inhibitory"]):
        entries = [("synapse", colors["excitatory"])]  # one colour says nothing of polarity
    else:
        entries = [(f"{p} synapse", colors[p]) for p in present]
    handles = [
        Line2D([], [], color=color, lw=1.5, marker=">", markevery=[-1], label=label)
        for label, color in entries
    ]
    if np.any(np.diag(wiring.adjacency_matrix)):
        ring = dict(marker="o", markersize=np.sqrt(2.5 * node_size), markerfacecolor="none")
        handles.append(Line2D([], [], color="gray", lw=0, label="synapse onto itself", **ring))
    return handles


def _draw_edges(wiring: Wiring, ax: Any, layout: Layout, colors: dict, node_size: float) -> None:
    groups = [("sensory", wiring.sensory_adjacency_matrix), ("neuron", wiring.adjacency_matrix)]
    for group, matrix in groups:
        for src, dest in np.argwhere(matrix):
            color = colors["excitatory" if matrix[src, dest] > 0 else "inhibitory"]
            _, x0, y0 = layout[(group, int(src))]
            _, x1, y1 = layout[("neuron", int(dest))]
            if group == "neuron" and src == dest:
                ax.scatter([x0], [y0], s=2.5 * node_size, facecolors="none", edgecolors=color)
                continue
            # Bend edges inside a column or pointing backwards so they do not overlap.
            rad = 0.0 if x1 > x0 else (0.5 if x1 == x0 else 0.2)
            arrow = dict(arrowstyle="-|>", color=color, lw=0.6, alpha=0.6, shrinkA=4, shrinkB=4)
            arrow["connectionstyle"] = f"arc3,rad={rad}"
            ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops=arrow)


def _draw_nodes(
    ax: Any,
    layout: Layout,
    colors: dict,
    node_size: float,
    labels: bool,
    node_colors: dict[tuple[str, int], Any] | None = None,
) -> None:
    for kind in KINDS:
        nodes = [(node, x, y) for node, (k, x, y) in layout.items() if k == kind]
        if not nodes:
            continue
        xs, ys = [x for _, x, _ in nodes], [y for _, _, y in nodes]
        style: dict[str, Any] = {"c": colors[kind]}
        if node_colors is not None:
            own = [node_colors.get(node, colors[kind]) for node, _, _ in nodes]
            style = {"c": own, "edgecolors": "0.3", "linewidths": 0.6}
        ax.scatter(xs, ys, s=node_size, zorder=3, label=kind, **style)
        ax.text(xs[0], 0.6, kind, ha="center", fontsize="small")
        for (group, i), x, y in nodes if labels else []:
            name = f"s{i}" if group == "sensory" else str(i)
            ax.text(x + 0.06, y, name, fontsize="x-small", va="center", zorder=4)
