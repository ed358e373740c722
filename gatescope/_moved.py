"""The import paths of the flat layout, kept working for one release with a DeprecationWarning.

gatescope's modules moved into subpackages that show its layers (recorder, traces, checkpoints, inputs, runs,
findings). An import of an old path is answered with the module at its new place (the same module object,
so monkeypatching either name patches both), after a ``DeprecationWarning`` that names the new path.
``MOVED`` is the one table of old -> new; ``install`` puts its finder on ``sys.meta_path``.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

MOVED = {
    "gatescope.cells": "gatescope.recorder.cells",
    "gatescope.gemm": "gatescope.recorder.gemm",
    "gatescope.onednn": "gatescope.recorder.onednn",
    "gatescope.engine": "gatescope.recorder.engine",
    "gatescope.recordable": "gatescope.recorder.recordable",
    "gatescope.interventions": "gatescope.recorder.interventions",
    "gatescope.hooks": "gatescope.recorder.hooks",
    "gatescope.recording": "gatescope.recorder.recording",
    "gatescope.hookpoints": "gatescope.recorder.hookpoints",
    "gatescope.modules": "gatescope.recorder.rnn",
    "gatescope.reset_before": "gatescope.recorder.rnn",
    "gatescope.trace": "gatescope.traces.trace",
    "gatescope.lazyrows": "gatescope.traces.lazyrows",
    "gatescope.tracefile": "gatescope.traces.file",
    "gatescope.shardfile": "gatescope.traces.file",
    "gatescope.checkpoint": "gatescope.checkpoints.loader",
    "gatescope.discovery": "gatescope.checkpoints.discovery",
    "gatescope.formats": "gatescope.checkpoints.formats",
    "gatescope.inspect_report": "gatescope.analysis.weights",
    "gatescope.corpus": "gatescope.inputs.corpus",
    "gatescope.features": "gatescope.inputs.features",
    "gatescope.stimuli": "gatescope.inputs.stimuli",
    "gatescope.distributed": "gatescope.runs.distributed",
    "gatescope.cli.stream": "gatescope.runs.stream",
    "gatescope.colorscale": "gatescope.display.colorscale",
    "gatescope.analysis.progress": "gatescope.progress",
    "gatescope.analysis.findings": "gatescope.findings.study",
    "gatescope.analysis.findings_report": "gatescope.findings.report",
    "gatescope.analysis.stream_analyses": "gatescope.analysis.streaming.analyses",
    "gatescope.analysis.stream_labels": "gatescope.analysis.streaming.labels",
}


def new_name(old: str) -> str | None:
    """The new place of an old module path (a moved package's submodules included), or None."""
    if old in MOVED:
        return MOVED[old]
    parent, _, child = old.rpartition(".")
    moved_parent = MOVED.get(parent)
    return f"{moved_parent}.{child}" if moved_parent and parent in _PACKAGES else None


_PACKAGES = {"gatescope.formats", "gatescope.stimuli"}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path and loads it as the module at its new place."""

    def find_spec(self, fullname, path=None, target=None):
        new = new_name(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=fullname in _PACKAGES)

    def create_module(self, spec):
        new = new_name(spec.name)
        warnings.warn(f"{spec.name} moved to {new}; the old path goes in the next release",
                      DeprecationWarning, stacklevel=2)
        module = importlib.import_module(new)
        spec.loader_state = module.__spec__  # the import system sets __spec__ to this one: put it back after
        return module

    def exec_module(self, module) -> None:
        """The module at the new place is already executed; only its own spec is restored."""
        module.__spec__ = module.__spec__.loader_state


def install() -> None:
    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Alias())  # before the path finder, which would load a second copy
