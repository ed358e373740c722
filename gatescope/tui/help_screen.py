"""The help screen (`?`): every key of the browser and what the colours mean."""
from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# gatescope browse

The **heatmap** shows units (rows, two per line: upper and lower half of each cell) against
token rows (columns) for one quantity `PATH.lLAYER.DIR.KIND`. Gates `i f o r z` use a
sequential scale (0 dark violet .. 1 yellow); `g m n h` a diverging one (-1 blue .. 0 white
.. +1 red); the cell state `c` is coloured by tanh(c). Grey means NaN. The cursor's half cell
is magenta. The **text view** colours each token of the sequence by the cursor's unit; the
**unit detail** shows every kind of that unit over the visible columns and its exact values.

| key | action |
| --- | --- |
| ← → | previous / next token row |
| ↑ ↓ | previous / next unit |
| PgUp PgDn | scroll one screen of tokens |
| Ctrl+↑ Ctrl+↓ | scroll one screen of units |
| Home End | start / end of the sequence |
| + - | wider / narrower columns |
| w | columns as wide as the longest token on screen (again: back) |
| v | select the cursor's token (start a span) |
| Shift+← Shift+→ | extend the selected span |
| [ ] | lower / raise the threshold (0.05 a step) |
| a | add the cursor's unit to the selection, or remove it |
| A | match on the cursor's unit alone |
| R | show only the selected units in the heatmap (again: all) |
| Escape | clear the selection |
| C | compare this sequence with another, side by side (d: difference) |
| i f g o c m h, r z n | show that kind |
| k | next kind |
| L | next layer |
| D | other direction (bidirectional modules) |
| M | next module |
| / | search the tokens (words, characters, or ids) |
| N | next match |
| u | go to a unit (`37` or `rnn.l1.fwd.h:37`) |
| # | go to a sequence by number |
| Tab | move between heatmap, sequences and ranked units |
| Enter | (sequences, ranked units) go to the selected one |
| x | explain the cursor's unit at its token, term by term (needs the model: `browse --model`); Enter on an upstream unit goes there |
| W | colour the text by each token's contribution to the cursor's unit at its token (GCD, needs the model); W again: by the unit's values |
| e | save the screen as SVG |
| E | save the visible heatmap as PNG |
| Ctrl+P | command palette |
| ? | this help |
| q | quit |

Mouse: a click on a cell selects its upper unit, a second click its lower unit; a click on a
token in the text view moves the cursor there; a drag across tokens (heatmap or text) selects a span.

**Select and match** (LSTMVis): a span of tokens selects the units that are on above the
threshold at every step of it (default 0.5 for the gates i f o r z, 0.3 for the others); the
**matches** panel lists the other spans where those units are on, ranked by the fraction of
on cells, with the features over the matches; Enter on a match moves every view there. The
plot under the unit detail draws the selected units against the threshold. The rows under the
heatmap are the trace's features: binary ones filled or empty, categorical ones a colour per
value, continuous ones a scale (legend below them).

**Ranked units** (right, below the sequences): the units of the quantity shown, ranked by
|Pearson r| with a trace feature, or by saturation (fraction of steps < 0.1 or > 0.9). On a
large trace, ranking reads the whole quantity: press the *rank* button (or pick a criterion).
Enter on a row moves the heatmap and the text to that unit.
"""


class HelpScreen(ModalScreen[None]):
    """Keys and colours, dismissed with Escape, q or ?."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "dismiss(None)", "close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(HELP)
