"""Rich display in Jupyter: traces, units and result tables that show themselves, as self-contained HTML and SVG.

`show` draws one unit over text (Karpathy et al. 2015) or a units x tokens heatmap (LSTMVis); a Trace,
a ranking `Table` and an agreement result display themselves (IPython's ``_repr_html_``). Figures are
inline SVG, with no JavaScript and nothing fetched from the network, on the browser's colour scales
(gatescope.display.colorscale), and save themselves as ``.html`` or ``.svg``. On a large trace only the rows
drawn are read, and a figure says in one line what it left out. Imports neither torch nor Textual.
"""
from gatescope.display.figure import Figure
from gatescope.display.heatmap import Heatmap
from gatescope.display.show import show
from gatescope.display.unit_text import UnitText

__all__ = ["Figure", "Heatmap", "UnitText", "show"]
