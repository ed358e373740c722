"""The xlstm package's sLSTM and mLSTM recorded by gatescope: outputs unchanged, every quantity equal to the
independent reference (tests/modern_reference.py), edits carried through, what cannot be recorded refused."""
from __future__ import annotations

import itertools

import pytest
import torch

import gatescope
from gatescope.errors import GatescopeError, GatescopeWarning
from tests.modern_reference import mlstm_large_reference as large_reference
from tests.modern_reference import mlstm_reference, slstm_layer_pre, slstm_reference

pytest.importorskip("xlstm", reason="the xlstm package is not installed (pip install gatescope[modern])")
from xlstm.blocks.mlstm.layer import mLSTMLayer, mLSTMLayerConfig  # noqa: E402
from xlstm.blocks.slstm.cell import sLSTMCell_cuda, sLSTMCellConfig  # noqa: E402
from xlstm.blocks.slstm.layer import sLSTMLayer, sLSTMLayerConfig  # noqa: E402

TOL = 1e-5
SLSTM_KINDS = "ifgocdsh"  # the paper's i f z o c n m h
MLSTM_KINDS = "ifsdoh"  # the paper's i f m n o h; C (v) on request


@pytest.fixture
def slstm():
    torch.manual_seed(0)
    return sLSTMLayer(sLSTMLayerConfig(embedding_dim=8, num_heads=2, backend="vanilla", conv1d_kernel_size=2,
                                       bias_init="standard", recurrent_weight_init="standard"))


@pytest.fixture
def mlstm():
    torch.manual_seed(1)
    return mLSTMLayer(mLSTMLayerConfig(embedding_dim=8, num_heads=2, context_length=6, conv1d_kernel_size=3))


@pytest.fixture
def x():
    return torch.randn(3, 6, 8, generator=torch.Generator().manual_seed(2))


def seq(trace, name: str, b: int) -> torch.Tensor:
    """Sequence b of quantity ``name``: (T, W)."""
    return trace[name][trace.sequence(b)]


def test_slstm_layer_output_unchanged_and_h_is_the_cells_output(slstm, x):
    plain = slstm(x)
    seen = {}
    slstm.slstm_cell.register_forward_hook(lambda m, a, out: seen.__setitem__("y", out[0]))
    with gatescope.record(slstm) as rec:
        out = slstm(x)
    assert torch.equal(out, plain)  # the package's own operations, in its order
    assert rec.trace.names == [f"slstm_cell.l0.fwd.{k}" for k in SLSTM_KINDS]
    cell_out = seen["y"].transpose(1, 2).reshape(3, 6, 8)  # (B, NH, S, DH) -> (B, S, H)
    for b in range(3):
        torch.testing.assert_close(seq(rec.trace, "slstm_cell.l0.fwd.h", b), cell_out[b], atol=TOL, rtol=0)


def test_slstm_every_quantity_equals_the_reference(slstm, x):
    with gatescope.record(slstm) as rec:
        slstm(x)
    for b in range(3):
        # the reference reads i from the module named fgate and f from igate, as the layer feeds its cell
        ref = slstm_reference(slstm.slstm_cell, slstm_layer_pre(slstm, x[b]))
        for kind in SLSTM_KINDS:
            torch.testing.assert_close(seq(rec.trace, f"slstm_cell.l0.fwd.{kind}", b), ref[kind],
                                       atol=TOL, rtol=0, msg=f"{kind} of sequence {b}")


def test_slstm_cell_alone_from_a_given_state(slstm, x):
    cell = slstm.slstm_cell
    pre = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(3))  # (B, S, 4H), gate-major
    state = torch.rand(4, 2, 8, generator=torch.Generator().manual_seed(4)) + 0.5  # h c n m, n > 0
    plain, _ = cell(pre, state)
    with gatescope.record(cell) as rec:
        out, _ = cell(pre, state)
    assert torch.equal(out, plain)
    for b in range(2):
        ref = slstm_reference(cell, pre[b].view(5, 4, 8), state[:, b])
        torch.testing.assert_close(seq(rec.trace, "slstm.l0.fwd.h", b), out[b].transpose(0, 1).reshape(5, 8),
                                   atol=TOL, rtol=0)
        for kind in SLSTM_KINDS:
            torch.testing.assert_close(seq(rec.trace, f"slstm.l0.fwd.{kind}", b), ref[kind], atol=TOL, rtol=0)


def test_slstm_intervention_is_carried_through(slstm, x):
    edit = gatescope.Intervention("slstm_cell.l0.fwd.f", units=[1, 6], op="set", value=0.0, steps=[2])
    with gatescope.record(slstm, interventions=[edit]) as rec:
        out = slstm(x)
    assert not torch.allclose(out, slstm(x))

    def forget_nothing(kind, t, value):
        if kind == "f" and t == 2:
            value = value.clone()
            value[[1, 6]] = 0.0
        return value

    ref = slstm_reference(slstm.slstm_cell, slstm_layer_pre(slstm, x[0]), edit=forget_nothing)
    for kind in SLSTM_KINDS:
        torch.testing.assert_close(seq(rec.trace, f"slstm_cell.l0.fwd.{kind}", 0), ref[kind], atol=TOL, rtol=0)


def test_slstm_gradients_reach_the_gates(slstm, x):
    with gatescope.record(slstm, kinds=["i", "f"]) as rec:
        out = slstm(x)
    grads = rec.gradients(out[:, -1].sum())
    assert grads["slstm_cell.l0.fwd.f"].abs().sum() > 0


def test_slstm_cuda_backend_is_refused_before_any_forward():
    cell = sLSTMCell_cuda(sLSTMCellConfig(hidden_size=8, num_heads=2, backend="cuda"), skip_backend_init=True)
    with pytest.raises(GatescopeError, match="backend='vanilla'"):
        gatescope.record(cell)


def test_mlstm_output_and_every_quantity(mlstm, x):
    plain = mlstm(x)
    with gatescope.record(mlstm) as rec:
        out = mlstm(x)
    torch.testing.assert_close(out, plain, atol=TOL, rtol=0)
    assert rec.trace.names == [f"mlstm.l0.fwd.{k}" for k in MLSTM_KINDS]  # no matrix memory unless asked
    for b in range(3):
        ref = mlstm_reference(mlstm, x[b])
        torch.testing.assert_close(ref["y"], plain[b], atol=TOL, rtol=0)  # the reference is the package's layer
        for kind in MLSTM_KINDS:
            torch.testing.assert_close(seq(rec.trace, f"mlstm.l0.fwd.{kind}", b), ref[kind], atol=TOL, rtol=0,
                                       msg=f"{kind} of sequence {b}")


def test_mlstm_matrix_memory_on_request_with_its_size_said(mlstm, x):
    with pytest.warns(GatescopeWarning, match=r"mlstm.l0.fwd.v is recorded: 2048 values per step"):
        rec = gatescope.record(mlstm, names="*.v")
    with rec:
        mlstm(x)
    assert rec.trace.names == ["mlstm.l0.fwd.v"]
    ref = mlstm_reference(mlstm, x[1])
    torch.testing.assert_close(seq(rec.trace, "mlstm.l0.fwd.v", 1), ref["v"], atol=TOL, rtol=0)


def test_mlstm_edits_flow(mlstm, x):
    """f = 0 at step 3: the state forgets everything before, so d_3 = i_3 k_3 / sqrt(DH); h = 0 at step 5
    gives the layer output proj_down(0) = 0 there."""
    forget = gatescope.Intervention("mlstm.l0.fwd.f", op="set", value=0.0, steps=[3])
    zero_h = gatescope.Intervention("mlstm.l0.fwd.h", op="set", value=0.0, steps=[5])
    with gatescope.record(mlstm, interventions=[forget, zero_h]) as rec:
        out = mlstm(x)
    assert torch.equal(out[:, 5], torch.zeros_like(out[:, 5]))  # proj_down has no bias
    assert not torch.allclose(out[:, 4], mlstm(x)[:, 4], atol=1e-3)  # the edit at 3 reached step 4
    ref = mlstm_reference(mlstm, x[0])
    i = seq(rec.trace, "mlstm.l0.fwd.i", 0)[3]  # (NH,)
    k = ref["key"][3].view(2, -1)  # (NH, DH): the keys do not depend on the state
    expected = (i[:, None] * k / k.shape[1] ** 0.5).reshape(-1)
    torch.testing.assert_close(seq(rec.trace, "mlstm.l0.fwd.d", 0)[3], expected, atol=TOL, rtol=0)


def test_mlstm_steps_are_recorded_and_edits_flow(mlstm, x):
    """mLSTMLayer.step (generation) from the state of the call before: its outputs unchanged, h what proj_down
    reads, an edit of f (forget everything) at the third call reaching the fourth call's output."""
    def run(**record):
        outs, state = [], {"mlstm_state": None, "conv_state": None}
        with gatescope.record(mlstm, **record) as rec:
            for t in range(4):
                out, state = mlstm.step(x[:, t:t + 1], **state)
                outs.append(out)
        return torch.cat(outs, 1), rec.trace

    plain = torch.cat([out for out, _ in _steps(mlstm, x, 4)], 1)
    out, trace = run()
    torch.testing.assert_close(out, plain, atol=TOL, rtol=0)
    assert trace.num_sequences == 12  # four calls of one step, three sequences each
    h = trace["mlstm.l0.fwd.h"].view(4, 3, -1).transpose(0, 1)  # (B, T, D), calls in order
    torch.testing.assert_close(h @ mlstm.proj_down.weight.T, plain, atol=TOL, rtol=0)
    calls = itertools.count()  # f is seen once per call (each call is one step, step 0 of its own sequence)
    edited, _ = run(hooks={"mlstm.l0.fwd.f": lambda value, step: torch.zeros_like(value) if next(calls) == 2 else None})
    assert torch.equal(edited[:, :2], out[:, :2]) and not torch.allclose(edited[:, 3], out[:, 3], atol=1e-4)


def _steps(layer, x, count):
    state = {"mlstm_state": None, "conv_state": None}
    for t in range(count):
        out, state = layer.step(x[:, t:t + 1], **state)
        yield out, state


def test_xlstm_block_stack_model_names(x):
    from xlstm import xLSTMBlockStack, xLSTMBlockStackConfig
    from xlstm.blocks.mlstm.block import mLSTMBlockConfig
    from xlstm.blocks.slstm.block import sLSTMBlockConfig

    config = xLSTMBlockStackConfig(
        mlstm_block=mLSTMBlockConfig(mlstm=mLSTMLayerConfig(num_heads=2, conv1d_kernel_size=2)),
        slstm_block=sLSTMBlockConfig(slstm=sLSTMLayerConfig(num_heads=2, backend="vanilla", conv1d_kernel_size=2)),
        context_length=6, num_blocks=2, embedding_dim=8, slstm_at=[1])
    torch.manual_seed(5)
    stack = xLSTMBlockStack(config)
    plain = stack(x)
    with gatescope.record(stack) as rec:
        out = stack(x)
    torch.testing.assert_close(out, plain, atol=TOL, rtol=0)
    assert "blocks.0.xlstm.l0.fwd.i" in rec.trace.names and "blocks.0.xlstm.l0.fwd.v" not in rec.trace.names
    assert "blocks.1.xlstm.slstm_cell.l0.fwd.f" in rec.trace.names
    assert rec.trace.meta["modules"][0]["cell"] == "mLSTM"


def test_slstm_layer_steps_are_one_step_sequences_continuing_the_state(slstm, x):
    with gatescope.record(slstm, kinds=["h", "s"]) as whole:
        slstm(x)
    with gatescope.record(slstm, kinds=["h", "s"]) as stepped:
        state = {"conv_state": None, "slstm_state": None}
        for t in range(3):
            _, state = slstm.step(x[:, t:t + 1], **state)
    assert stepped.trace.num_sequences == 9  # three calls of one step, three sequences each
    for t in range(3):
        for kind in ("h", "s"):
            got = stepped.trace[f"slstm_cell.l0.fwd.{kind}"][3 * t:3 * t + 3]  # call t: (B, H)
            torch.testing.assert_close(got, whole.trace.padded(f"slstm_cell.l0.fwd.{kind}")[:, t], atol=TOL, rtol=0)


def test_mlstm_trace_file_keeps_the_per_head_widths(mlstm, x, tmp_path):
    with gatescope.record(mlstm) as rec:
        mlstm(x)
    assert rec.trace.meta["modules"][0]["widths"] == {"i": 2, "f": 2, "s": 2, "v": 2048}
    rec.trace.save(tmp_path / "mlstm.safetensors")
    loaded = gatescope.load_trace(tmp_path / "mlstm.safetensors")
    torch.testing.assert_close(loaded["mlstm.l0.fwd.f"], rec.trace["mlstm.l0.fwd.f"])


def test_mlstm_hook_points_leave_the_matrix_memory_out_unless_named(mlstm):
    assert "mlstm.l0.fwd.v" not in gatescope.hook_points(mlstm).points
    assert list(gatescope.hook_points(mlstm, names="*.v").points) == ["mlstm.l0.fwd.v"]


def test_mlstm_longer_than_its_context_fails_as_the_package_does(mlstm):
    x = torch.randn(1, 9, 8)  # context_length is 6
    with pytest.raises(RuntimeError) as plain:
        mlstm(x)
    with gatescope.record(mlstm), pytest.raises(RuntimeError) as recorded:
        mlstm(x)
    assert str(recorded.value) == str(plain.value)


@pytest.fixture
def large():
    from mlstm_kernels.torch.backend_module import mLSTMBackendConfig
    from xlstm.xlstm_large.model import mLSTMLayer as LargeLayer
    from xlstm.xlstm_large.model import mLSTMLayerConfig as LargeConfig

    torch.manual_seed(6)
    backend = mLSTMBackendConfig(chunkwise_kernel="chunkwise--native_autograd", chunk_size=4)
    layer = LargeLayer(LargeConfig(embedding_dim=16, num_heads=2, mlstm_backend=backend))
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))  # gates and norm weights away from their initial values
    return layer


def test_large_mlstm_output_and_every_quantity(large):
    x = torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(7))
    plain, plain_state = large(x)  # the chunkwise kernel of mlstm_kernels
    with gatescope.record(large, names="*") as rec:
        out, state = large(x)
    torch.testing.assert_close(out, plain, atol=TOL, rtol=0)
    for mine, theirs in zip(state, plain_state):
        torch.testing.assert_close(mine, theirs, atol=TOL, rtol=0)
    assert rec.trace.meta["modules"][0]["widths"] == {"i": 2, "f": 2, "s": 2, "v": 64, "d": 8}
    for b in range(2):
        ref = large_reference(large, x[b])
        torch.testing.assert_close(ref["y"], plain[b], atol=TOL, rtol=0)
        for kind in "ifsdvoh":
            torch.testing.assert_close(seq(rec.trace, f"mlstm.l0.fwd.{kind}", b), ref[kind], atol=TOL, rtol=0,
                                       msg=f"{kind} of sequence {b}")


@pytest.mark.slow
def test_transformers_xlstm_records_through_the_xlstm_classes():
    transformers = pytest.importorskip("transformers", reason="transformers is not installed (its xLSTM is optional)")
    config = transformers.xLSTMConfig(vocab_size=50, hidden_size=32, num_heads=2, num_blocks=2, mode="train",
                                      chunkwise_kernel="chunkwise--native_autograd", chunk_size=4,
                                      sequence_kernel="native_sequence__native", step_kernel="native")
    torch.manual_seed(8)
    model = transformers.xLSTMForCausalLM(config).eval()
    ids = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        plain = model(ids, use_cache=False).logits
        with gatescope.record(model) as rec:
            out = model(ids, use_cache=False).logits
    torch.testing.assert_close(out, plain, atol=TOL, rtol=0)
    assert rec.trace.names[:6] == [f"backbone.blocks.0.mlstm_layer.l0.fwd.{k}" for k in "ifsdoh"]
