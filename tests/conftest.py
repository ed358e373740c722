"""Shared fixtures. The tests mirror the package (tests/recorder for gatescope/recorder, ...); the pieces
every folder uses live beside this file: reference.py (the independent reference loop, torch's documented
equations one step at a time), checkpoint_fixtures.py (the toy word LM and its checkpoint),
cli_helpers.py (the command line in-process and the shape of its errors)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.checkpoint_fixtures import language_model, word_metadata

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root() -> Path:
    """The repository's root folder (README.md, sample_models/, docs/)."""
    return ROOT


@pytest.fixture
def toy_lm(tmp_path):
    """The seeded toy word LM (embedding -> LSTM -> decoder) and its checkpoint with a word vocabulary."""
    return language_model(tmp_path, word_metadata())
