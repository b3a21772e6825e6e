"""Which cell types Core ML export knows, and how a cell of your own joins them.

Kept apart from the graphs, which need coremltools, so a graph can be registered where
coremltools is not installed.
"""

#: The graph class of each exportable cell type (see :func:`register_graph`).
CELL_GRAPHS: dict[type, type] = {}


def register_graph(cell_type: type, graph: type) -> None:
    """Export cells of exactly ``cell_type`` with ``graph``.

    ``graph(cell)`` builds the constants from the cell once; its ``project(x)`` and
    ``step(inputs, h, dt) -> (y, h_next)`` build MIL ops on
    `Tensor` values in the ``(B, C, 1, S)`` layout, like the
    cell's own [`project`][ncps_mlx.cells.Cell.project] and [`step`][ncps_mlx.cells.Cell.step]
    (math written once over an op set runs on `ncps_mlx.export.mil` unchanged).
    """
    CELL_GRAPHS[cell_type] = graph
