"""Text on matplotlib figures is drawn as written: tokens holding mathtext, control characters or a lone
surrogate neither end the figure nor turn into math, in the gate profile and in the browser's PNG export."""
from __future__ import annotations

import re

import matplotlib
import numpy as np
import pytest
from tests.cli_helpers import cli
from tests.fuzz_corpus import MATH_WORDS, hostile_checkpoints

from gatescope.display.plot_text import plain

DRAWN = {"$x^$": "$x^$", "a\x07b": "a\\x07b", "$\\frac{$": "$\\frac{$", "x\ny": "x\\ny", "\ud800": "\\ud800"}


def svg_text(fig) -> str:
    """The SVG of ``fig`` with its text kept as text (not glyph outlines), to read what was drawn."""
    from io import StringIO

    out = StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(out, format="svg")
    return out.getvalue()


def test_plain_strings_are_drawn_as_written():
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot()
    ax.set_xticks(range(len(DRAWN)), [plain(t) for t in DRAWN])
    ax.set_title(plain("$\\frac{$ and $$"))
    svg = svg_text(fig)
    for shown in [*DRAWN.values(), "$\\frac{$ and $$"]:
        assert shown in svg, shown
    assert plain("x" * 500).endswith("(340 more characters)") and len(plain("x" * 500)) <= 200


def test_a_vocabulary_of_mathtext_draws_its_profile_and_its_browser_export(tmp_path, capsys):
    from gatescope.tui.export import HeatmapFigure, save_heatmap_png

    model, _ = hostile_checkpoints(tmp_path)["vocabulary of mathtext and control characters"]
    trace, png = tmp_path / "t.safetensors", tmp_path / "profile.png"
    cli(capsys, "trace", model, "--ids", " ".join(str(i) for i in range(2, len(MATH_WORDS))), "-o", trace)
    assert "wrote" in cli(capsys, "analyze", "profile", trace, "--unit", "rnn.l0.fwd.h:0", "-o", png).err
    assert png.read_bytes()[:4] == b"\x89PNG"
    tokens = MATH_WORDS[2:]
    shown = HeatmapFigure("rnn.l0.fwd.h", "h", [0, 1], 0, tokens, [], 0, 0)
    export = save_heatmap_png(tmp_path / shown.file_name, np.zeros((len(tokens), 2), np.float32), shown)
    assert export.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("token", list(DRAWN))
def test_each_hostile_token_is_one_printable_line_without_unescaped_dollars(token):
    drawn = plain(token)
    assert drawn.isprintable() and not re.search(r"(?<!\\)\$", drawn)
