"""Sphinx directive ``.. stategraph:: archangel.bus.states.LIFECYCLE``: a graph drawn from itself.

The directive imports the :class:`~archangel.bus.states.StateGraph` it names and
renders, from that object's own tables, an inline SVG picture and a table of
every state's moves and error route. The picture and the code cannot disagree,
and nothing outside Python is needed (no graphviz).

Layout: the directive's content may place the states on a grid, one row per
line, ``.`` for an empty cell; the grid only positions boxes, and naming a state
the graph does not have is an error. Without a grid (or for states it leaves
out) states reached from ``graph.initial`` go in columns by breadth-first
distance, the others in a band below. Edges are straight unless a box is in the
way, then they bow around it. Error routes are written into the boxes
("fails → …") rather than drawn, which keeps the picture readable.

Enable it in ``conf.py``::

    sys.path.insert(0, str(Path(__file__).parent / "_ext"))
    extensions.append("stategraph")
"""

from __future__ import annotations

import html
import importlib
import math
from collections import deque
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

BOX_W, BOX_H = 128, 44
COL_GAP, ROW_GAP = 176, 78
MARGIN = 24
BEND = 46  # how far back edges and same-column edges bow out


def _name(state: Any) -> str:
    return str(getattr(state, "name", state))


def parse_grid(graph: Any, lines: Any) -> dict[Any, tuple[int, int]]:
    """The cells the directive's content gives states: ``{state: (column, row)}``."""
    by_name = {_name(state): state for state in graph.states}
    grid: dict[Any, tuple[int, int]] = {}
    for row, line in enumerate(line for line in lines if line.strip()):
        for col, word in enumerate(line.split()):
            if word == ".":
                continue
            if word not in by_name:
                raise ValueError(f"{word!r} is not a state of {graph!r}")
            grid[by_name[word]] = (col, row)
    return grid


def layout(graph: Any, grid: dict[Any, tuple[int, int]]) -> dict[Any, tuple[float, float]]:
    """Centre coordinates of every state's box."""
    cell = _auto_cells(graph) if not grid else dict(grid)
    if grid:  # states the grid leaves out go on a row of their own below it
        spare = max(row for _, row in grid.values()) + 1
        for col, state in enumerate(s for s in graph.states if s not in grid):
            cell[state] = (col, spare)
    return {
        state: (
            MARGIN + BEND + BOX_W / 2 + col * COL_GAP,
            MARGIN + BEND + BOX_H / 2 + row * ROW_GAP,
        )
        for state, (col, row) in cell.items()
    }


def _auto_cells(graph: Any) -> dict[Any, tuple[int, int]]:
    column: dict[Any, int] = {}
    order: list[Any] = []
    if graph.initial is not None:
        column[graph.initial] = 0
        order.append(graph.initial)
        queue = deque([graph.initial])
        while queue:
            state = queue.popleft()
            for succ in graph.successors(state):
                if succ not in column:
                    column[succ] = column[state] + 1
                    order.append(succ)
                    queue.append(succ)
    band = [state for state in graph.states if state not in column]
    for _ in band:  # settle chains of unreached states, one link per pass
        for state in band:
            placed = [column[s] for s in graph.successors(state) if s in column]
            if placed and state not in column:
                column[state] = max(min(placed) - 1, 0)
    for state in band:
        column.setdefault(state, 0)
    rows: dict[int, int] = {}
    cell: dict[Any, tuple[int, int]] = {}
    for state in order:
        cell[state] = (column[state], rows.get(column[state], 0))
        rows[column[state]] = cell[state][1] + 1
    first_band_row = max(rows.values(), default=0)
    below: dict[int, int] = {}
    for state in band:
        row = first_band_row + below.get(column[state], 0)
        below[column[state]] = below.get(column[state], 0) + 1
        cell[state] = (column[state], row)
    return cell


def _clip(centre: tuple[float, float], towards: tuple[float, float]) -> tuple[float, float]:
    """Where the ray from a box's centre towards a point leaves the box."""
    dx, dy = towards[0] - centre[0], towards[1] - centre[1]
    if dx == dy == 0:
        return centre
    scale = min(
        (BOX_W / 2 + 3) / abs(dx) if dx else math.inf,
        (BOX_H / 2 + 3) / abs(dy) if dy else math.inf,
    )
    return centre[0] + dx * scale, centre[1] + dy * scale


def _route(where: dict[Any, tuple[float, float]], source: Any, target: Any) -> tuple[float, float]:
    """The control point of an edge: straight if it can be, bowed around boxes if not."""
    (x1, y1), (x2, y2) = where[source], where[target]
    length = math.hypot(x2 - x1, y2 - y1) or 1.0
    normal = ((y2 - y1) / length, -(x2 - x1) / length)
    others = [xy for state, xy in where.items() if state not in (source, target)]
    for bend in (0.0, 1.0, -1.0, 2.0, -2.0, 3.0, -3.0):
        cx = (x1 + x2) / 2 + normal[0] * BEND * bend
        cy = (y1 + y2) / 2 + normal[1] * BEND * bend
        samples = (
            (
                (1 - t) ** 2 * x1 + 2 * (1 - t) * t * cx + t**2 * x2,
                (1 - t) ** 2 * y1 + 2 * (1 - t) * t * cy + t**2 * y2,
            )
            for t in (i / 40 for i in range(1, 40))
        )
        if not any(
            abs(px - ox) < BOX_W / 2 + 4 and abs(py - oy) < BOX_H / 2 + 4
            for px, py in samples
            for ox, oy in others
        ):
            return cx, cy
    return (x1 + x2) / 2, (y1 + y2) / 2


def render_svg(graph: Any, grid: dict[Any, tuple[int, int]] | None = None) -> str:
    """The graph as an inline SVG document; ``grid`` places states (see :func:`parse_grid`)."""
    where = layout(graph, grid or {})
    error_states = set(graph.errors.values())
    width = max(x for x, _ in where.values()) + BOX_W / 2 + BEND + MARGIN
    height = max(y for _, y in where.values()) + BOX_H / 2 + BEND + MARGIN
    label = "State graph: " + "; ".join(
        f"{_name(a)} to {', '.join(map(_name, targets))}" for a, targets in graph.edges.items()
    )
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="stategraph" role="img" '
        f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'aria-label="{html.escape(label)}" font-family="sans-serif" font-size="13">',
        "<defs><marker id='stategraph-arrow' viewBox='0 0 10 10' refX='9' refY='5' "
        "markerWidth='7' markerHeight='7' orient='auto-start-reverse'>"
        "<path d='M0,0 L10,5 L0,10 z' fill='#444'/></marker></defs>",
    ]
    for source, targets in graph.edges.items():
        for target in targets:
            mx, my = _route(where, source, target)
            start = _clip(where[source], (mx, my))
            end = _clip(where[target], (mx, my))
            out.append(
                f'<path d="M{start[0]:.1f},{start[1]:.1f} Q{mx:.1f},{my:.1f} '
                f'{end[0]:.1f},{end[1]:.1f}" fill="none" stroke="#444" stroke-width="1.4" '
                f'marker-end="url(#stategraph-arrow)"/>'
            )
    for state, (x, y) in where.items():
        error = state in error_states
        stroke = "#b03030" if error else "#333"
        fill = "#fbecec" if error else ("#e8eef8" if state == graph.initial else "#fff")
        out.append(
            f'<rect x="{x - BOX_W / 2:.1f}" y="{y - BOX_H / 2:.1f}" width="{BOX_W}" '
            f'height="{BOX_H}" rx="8" fill="{fill}" stroke="{stroke}" stroke-width="1.4"/>'
        )
        if state == graph.final:
            out.append(
                f'<rect x="{x - BOX_W / 2 + 3:.1f}" y="{y - BOX_H / 2 + 3:.1f}" '
                f'width="{BOX_W - 6}" height="{BOX_H - 6}" rx="6" fill="none" stroke="{stroke}"/>'
            )
        fails = graph.errors.get(state)
        name_y = y - 4 if fails is not None else y + 5
        out.append(
            f'<text x="{x:.1f}" y="{name_y:.1f}" text-anchor="middle" font-weight="bold">'
            f"{html.escape(_name(state))}</text>"
        )
        if fails is not None:
            out.append(
                f'<text x="{x:.1f}" y="{y + 13:.1f}" text-anchor="middle" font-size="10.5" '
                f'fill="#b03030">fails \u2192 {html.escape(_name(fails))}</text>'
            )
    out.append("</svg>")
    return "\n".join(out)


def edge_table(graph: Any) -> nodes.table:
    """Every state with the states it moves to and the error state a failure leads to."""
    table = nodes.table(classes=["stategraph-edges"])
    group = nodes.tgroup(cols=3)
    table += group
    for width in (2, 3, 2):
        group += nodes.colspec(colwidth=width)

    def row(*cells: str, literal: bool = True) -> nodes.row:
        line = nodes.row()
        for text in cells:
            entry = nodes.entry()
            entry += nodes.paragraph(
                "", "", nodes.literal(text, text) if literal else nodes.Text(text)
            )
            line += entry
        return line

    head = nodes.thead()
    head += row("state", "moves to", "a failure leads to", literal=False)
    group += head
    body = nodes.tbody()
    for state in graph.states:
        moves = ", ".join(map(_name, graph.successors(state))) or "\u2014"
        fails = graph.errors.get(state)
        body += row(_name(state), moves, _name(fails) if fails is not None else "\u2014")
    group += body
    return table


class StateGraphDirective(SphinxDirective):
    """``.. stategraph:: dotted.path.to.GRAPH``"""

    required_arguments = 1
    has_content = True

    def run(self) -> list[nodes.Node]:
        module_name, _, attribute = self.arguments[0].rpartition(".")
        try:
            graph = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise self.error(f"stategraph: cannot import {self.arguments[0]!r}: {exc}") from exc
        try:
            grid = parse_grid(graph, self.content)
        except ValueError as exc:
            raise self.error(f"stategraph: {exc}") from exc
        picture = nodes.raw("", render_svg(graph, grid), format="html")
        return [picture, edge_table(graph)]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("stategraph", StateGraphDirective)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
