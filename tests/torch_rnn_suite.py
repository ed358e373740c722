"""PyTorch's own RNN tests, run against gatescope's drop-ins.

A *variant* is a set of four classes standing in for torch.nn.LSTM / GRU / LSTMCell / GRUCell:

* ``torch``:  torch's own modules (the baseline every other variant is held to);
* ``step``:   gatescope.LSTM / GRU with route="step", and cells stepped by ``engine.run_cell``;
* ``replay``: gatescope.LSTM / GRU with route="replay" (cells: torch's, replay has no cell form);
* ``record``: torch's own modules, each call made inside ``gatescope.record(module)`` (whose trace
  is then assembled), i.e. what a user's model goes through when it is recorded.

Two sources of tests use them:

* ``module_infos(variant)``: torch's ModuleInfo entries for the four modules (the samples, error
  inputs and reference functions of torch.testing._internal.common_modules, which ship with
  torch) with ``module_cls`` swapped; tests/recorder/test_torch_rnn_suite.py runs them in the default suite.
* ``python tests/torch_rnn_suite.py PYTORCH_TEST_DIR``: the RNN tests of upstream test/test_nn.py
  (every test whose body uses LSTM / GRU / their cells / packing, with the helpers they call) and
  test/test_modules.py restricted to the four modules, once per variant, with the variant's classes
  in place of ``nn.LSTM`` etc. It prints per-variant counts and every test that passes on torch's
  modules but not on the variant. The sources come from Debian's source package (pytorch 2.6.0,
  whose RNN tests match newer releases)::

      printf 'deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s trixie main\\n' \\
          http://deb.debian.org/debian > /tmp/src/sources.list
      apt-get -o Dir::Etc::sourcelist=/tmp/src/sources.list -o Dir::State::Lists=/tmp/src/lists update
      apt-get -o Dir::Etc::sourcelist=/tmp/src/sources.list -o Dir::State::Lists=/tmp/src/lists \\
          source --download-only pytorch=2.6.0+dfsg-7
      tar -xJf pytorch_2.6.0+dfsg.orig.tar.xz --wildcards '*/test/test_nn.py' '*/test/test_modules.py'
      python tests/torch_rnn_suite.py pytorch-v2.6.0/test

Tests needing CUDA skip themselves (upstream decorators), as on any CPU machine.
"""
from __future__ import annotations

import ast
import copy
import re
import sys
import types
import unittest
from pathlib import Path

from torch import nn

import gatescope
from gatescope.recorder import engine

VARIANTS = ("torch", "step", "replay", "record")
NAMES = ("LSTM", "GRU", "LSTMCell", "GRUCell")


class StepLSTM(gatescope.LSTM):
    route = "step"


class StepGRU(gatescope.GRU):
    route = "step"


class ReplayLSTM(gatescope.LSTM):
    route = "replay"


class ReplayGRU(gatescope.GRU):
    route = "replay"


class _EngineCell:
    """A torch cell whose forward is the engine's cell entry (the stepper gatescope records with)."""

    def forward(self, input, hx=None):
        return engine.run_cell(self, input, hx)


class StepLSTMCell(_EngineCell, nn.LSTMCell):
    pass


class StepGRUCell(_EngineCell, nn.GRUCell):
    pass


class _Recorded:
    """A torch module whose every call runs inside ``gatescope.record`` (and assembles the trace)."""

    def forward(self, *args, **kwargs):
        with gatescope.record(self) as rec:
            out = self(*args, **kwargs)  # the recording's forward, installed on this instance
        rec.trace  # noqa: B018 -- assembling the trace is part of what is tested
        return out


class RecordedLSTM(_Recorded, nn.LSTM):
    pass


class RecordedGRU(_Recorded, nn.GRU):
    pass


class RecordedLSTMCell(_Recorded, nn.LSTMCell):
    pass


class RecordedGRUCell(_Recorded, nn.GRUCell):
    pass


def classes(variant: str) -> dict[str, type[nn.Module]]:
    """The four classes standing in for torch's in ``variant``."""
    stock = {name: getattr(nn, name) for name in NAMES}
    if variant == "torch":
        return stock
    if variant == "replay":
        return {**stock, "LSTM": ReplayLSTM, "GRU": ReplayGRU}
    prefix = {"step": "Step", "record": "Recorded"}[variant]
    return {name: globals()[prefix + name] for name in NAMES}


def module_infos(variant: str) -> list:
    """torch's ModuleInfo entries for LSTM, GRU, LSTMCell and GRUCell, with the variant's classes.

    Each keeps torch's name (``nn.LSTM``), so upstream test names, skips and expected failures are
    the same for every variant.
    """
    from torch.testing._internal.common_modules import ModuleInfo, module_db

    class Swapped(ModuleInfo):
        name = property(lambda self: self.torch_name)

    swap = classes(variant)
    infos = []
    for info in module_db:
        if info.module_cls in (nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell):
            torch_name = info.name
            info = copy.copy(info)
            info.__class__ = Swapped
            info.torch_name, info.module_cls = torch_name, swap[info.module_cls.__name__]
            infos.append(info)
    return infos


# -- upstream test_nn.py / test_modules.py ----------------------------------------------------------

_RNN_WORDS = re.compile(r"\b(LSTM|GRU|LSTMCell|GRUCell|RNNBase|rnn_utils|pack_padded_sequence|pack_sequence)\b")


def _nn_with(variant: str) -> types.ModuleType:
    """A stand-in for ``torch.nn`` whose LSTM / GRU / cells are the variant's."""
    proxy = types.ModuleType("torch.nn")
    proxy.__dict__.update(nn.__dict__)
    proxy.__dict__.update(classes(variant))
    return proxy


def _rnn_test_nn_module(test_dir: Path) -> types.ModuleType:
    """test_nn.py cut down to its RNN tests and the helpers they call, importable on a newer torch.

    Imports that no longer resolve become None (no RNN test uses them); every other class and
    method is dropped.
    """
    source = (test_dir / "test_nn.py").read_text()
    tree = ast.parse(source)
    body = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # one tolerant import per name
                name = alias.asname or alias.name
                body.extend(ast.parse(
                    f"try:\n    from {node.module} import {alias.name} as {name}\n"
                    f"except ImportError:\n    {name} = None\n").body)
        elif isinstance(node, ast.ClassDef) and node.name in ("TestNN", "TestNNDeviceType"):
            methods = {f.name: ast.get_source_segment(source, f) for f in node.body if isinstance(f, ast.FunctionDef)}
            helpers = {n for n in methods if not n.startswith("test")}
            calls = {n: {h for h in helpers if f"self.{h}(" in text} for n, text in methods.items()}
            rnn = {n for n, text in methods.items() if _RNN_WORDS.search(text)}
            keep = {n for n in methods if n.startswith("test") and (n in rnn or calls[n] & rnn)}
            keep |= {h for n in list(keep) for h in calls[n]}  # and the helpers they call
            node.body = [f for f in node.body if not isinstance(f, ast.FunctionDef) or f.name in keep]
            body.append(node)
        elif isinstance(node, ast.Assign):  # module constants; None where they need what is gone
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
            handler = ast.parse("\n".join(f"{t} = None" for t in targets) or "pass").body
            body.append(ast.Try(body=[node], handlers=[ast.ExceptHandler(type=ast.Name("Exception", ast.Load()),
                                name=None, body=handler)], orelse=[], finalbody=[]))
        elif isinstance(node, (ast.Import, ast.If)):
            body.append(node)
    body.extend(ast.parse("instantiate_device_type_tests(TestNNDeviceType, globals(), only_for='cpu')").body)
    module = types.ModuleType("rnn_test_nn")
    module.__file__ = str(test_dir / "test_nn.py")
    sys.modules[module.__name__] = module
    code = compile(ast.fix_missing_locations(ast.Module(body=body, type_ignores=[])), module.__file__, "exec")
    exec(code, module.__dict__)
    return module


def _test_modules_module(test_dir: Path, variant: str) -> types.ModuleType:
    """test_modules.py with module_db holding only the four modules, with the variant's classes."""
    import torch.testing._internal.common_modules as common_modules

    saved = common_modules.module_db
    common_modules.module_db = module_infos(variant)
    try:
        source = (test_dir / "test_modules.py").read_text()
        source = source.replace("instantiate_device_type_tests(TestModule, globals()",
                                "instantiate_device_type_tests(TestModule, globals(), only_for='cpu'")
        module = types.ModuleType(f"rnn_test_modules_{variant}")
        module.__file__ = str(test_dir / "test_modules.py")
        sys.modules[module.__name__] = module
        exec(compile(source, module.__file__, "exec"), module.__dict__)
    finally:
        common_modules.module_db = saved
    return module


def _tests(module: types.ModuleType) -> list[unittest.TestCase]:
    loader = unittest.TestLoader()
    cases = [c for n, c in vars(module).items() if isinstance(c, type) and issubclass(c, unittest.TestCase)
             and n.startswith("Test") and not n in ("TestNNDeviceType", "TestModule")]
    tests = []
    for case in cases:
        tests.extend(loader.loadTestsFromTestCase(case))
    return tests


def _outcomes(tests: list[unittest.TestCase]) -> dict[str, tuple[str, str]]:
    """test id (without the variant-specific module name) -> (outcome, first line of the reason)."""
    result = unittest.TestResult()
    for test in tests:
        test.run(result)
    found: dict[str, tuple[str, str]] = {}
    for kind, items in (("fail", result.failures), ("error", result.errors), ("skip", result.skipped),
                        ("xfail", result.expectedFailures), ("xpass", [(t, "") for t in result.unexpectedSuccesses])):
        for test, text in items:
            lines = [line for line in str(text).splitlines() if re.match(r"^[\w.]*(Error|Exception)\b", line)]
            found[_key(test)] = (kind, (lines[-1] if lines else str(text).strip()[:160])[:200])
    return {**{_key(t): ("pass", "") for t in tests}, **found}


def _key(test: unittest.TestCase) -> str:
    return test.id().split(".", 1)[1]


def run_upstream(test_dir: Path, variants: tuple[str, ...] = VARIANTS) -> dict[str, dict[str, tuple[str, str]]]:
    """Every selected upstream test under every variant: variant -> test -> (outcome, reason)."""
    import warnings

    warnings.filterwarnings("ignore")
    test_nn = _rnn_test_nn_module(test_dir)
    outcomes = {}
    for variant in variants:
        test_nn.nn = _nn_with(variant)
        tests = _tests(test_nn) + _tests(_test_modules_module(test_dir, variant))
        outcomes[variant] = _outcomes(tests)
    test_nn.nn = nn
    return outcomes


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not (Path(argv[0]) / "test_nn.py").is_file():
        print("usage: python tests/torch_rnn_suite.py PYTORCH_TEST_DIR (holding test_nn.py, test_modules.py)")
        return 2
    outcomes = run_upstream(Path(argv[0]))
    baseline = outcomes["torch"]
    worse = 0
    for variant, found in outcomes.items():
        counts: dict[str, int] = {}
        for outcome, _ in found.values():
            counts[outcome] = counts.get(outcome, 0) + 1
        print(f"{variant:7s} {len(found)} tests: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        for test, (outcome, reason) in sorted(found.items()):
            if baseline.get(test, ("",))[0] == "pass" and outcome != "pass":
                worse += 1
                print(f"    {outcome}: {test}: {reason}")
    print(f"{worse} test(s) pass on torch's modules but not on a variant")
    return 1 if worse else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main(sys.argv[1:]))
