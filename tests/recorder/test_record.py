"""record(): recorded gates equal an independent reference computation (tests/reference.py),
interventions change later steps exactly as the reference loop does, gradients flow."""
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import gatescope
from gatescope import GatescopeError, GatescopeWarning, Intervention, Trace, record
from tests.reference import reference_run

ATOL = 1e-5


class TinyLM(nn.Module):
    def __init__(self, cell="LSTM", **kwargs):
        super().__init__()
        self.embedding = nn.Embedding(11, 4)
        self.rnn = getattr(nn, cell)(4, 5, batch_first=True, **kwargs)
        out = (kwargs.get("proj_size") or 5) * (2 if kwargs.get("bidirectional") else 1)
        self.decoder = nn.Linear(out, 11)

    def forward(self, ids, lengths=None):
        x = self.embedding(ids)
        if lengths is not None:
            x = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.rnn(x)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
        else:
            out, _ = self.rnn(x)
        return self.decoder(out)


CONFIGS = [
    ("LSTM", {}),
    ("LSTM", {"num_layers": 2, "bidirectional": True}),
    ("LSTM", {"proj_size": 3, "num_layers": 2}),
    ("LSTM", {"bias": False}),
    ("GRU", {}),
    ("GRU", {"num_layers": 2, "bidirectional": True}),
]


@pytest.mark.parametrize("route", ["step", "replay"])
@pytest.mark.parametrize("cell,kwargs", CONFIGS)
def test_recorded_values_equal_reference(cell, kwargs, route):
    torch.manual_seed(0)
    model = TinyLM(cell, **kwargs).eval()
    ids = torch.randint(0, 11, (3, 7))
    lengths = torch.tensor([7, 4, 6])
    with torch.no_grad():
        plain = model(ids, lengths)
        with record(model, route=route) as rec:
            recorded = model(ids, lengths)
    assert torch.allclose(recorded, plain, atol=ATOL)  # recording does not change outputs
    trace = rec.trace
    assert trace.offsets.tolist() == [0, 7, 11, 17]
    for b in range(3):
        n = int(lengths[b])
        expected, _ = reference_run(model.rnn, model.embedding(ids[b, :n]).detach())
        assert set(expected) == set(trace.names)
        for name, values in expected.items():
            got = trace[name][trace.sequence(b)]
            assert torch.allclose(got, values, atol=ATOL), (name, b, (got - values).abs().max())
    assert trace.token_ids.tolist() == torch.cat([ids[b, : int(n)] for b, n in enumerate(lengths)]).tolist()


def test_names_follow_the_contract_and_root_module_naming():
    lstm = nn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2)
    with record(lstm) as rec:
        lstm(torch.randn(5, 2, 3))
    assert rec.trace.names[:7] == [f"lstm.l0.fwd.{k}" for k in "ifgocmh"]
    assert rec.trace["lstm.l1.bwd.h"].shape == (10, 2)
    assert rec.trace["lstm.l1.bwd.m"].shape == (10, 4)
    gru = gatescope.GRU(3, 4)
    with record(gru) as rec:
        gru(torch.randn(5, 3))  # unbatched
    assert rec.trace.names == ["gru.l0.fwd.r", "gru.l0.fwd.z", "gru.l0.fwd.n", "gru.l0.fwd.h"]
    assert rec.trace.num_sequences == 1


def test_successive_calls_append_sequences_and_filters_apply():
    torch.manual_seed(0)
    model = TinyLM("LSTM", num_layers=2).eval()
    with torch.no_grad(), record(model, layers=[1], kinds=["f", "h"], dtype=torch.float16) as rec:
        model(torch.randint(0, 11, (2, 5)))
        model(torch.randint(0, 11, (1, 3)))
    trace = rec.trace
    assert trace.names == ["rnn.l1.fwd.f", "rnn.l1.fwd.h"]
    assert trace.offsets.tolist() == [0, 5, 10, 13]
    assert trace["rnn.l1.fwd.f"].dtype == torch.float16
    assert trace.meta["modules"][0] == {
        "name": "rnn", "cell": "LSTM", "input_size": 4, "hidden_size": 5, "num_layers": 2,
        "bidirectional": False, "proj_size": 0, "bias": True,
    }


def test_take_gives_each_calls_trace_and_starts_afresh():
    torch.manual_seed(0)
    model = TinyLM("LSTM", num_layers=2).eval()
    first, second = torch.randint(0, 11, (2, 5)), torch.randint(0, 11, (3, 4))
    with torch.no_grad(), record(model, kinds=["c", "h"], dtype=torch.float16) as rec:
        model(first)
        taken = [rec.take()]
        model(second)
        taken.append(rec.take())
        assert rec.take().num_tokens == 0  # nothing since the last take
    for ids, part in zip((first, second), taken):
        with torch.no_grad(), record(model, kinds=["c", "h"], dtype=torch.float16) as alone:
            model(ids)
        assert part.names == alone.trace.names and torch.equal(part.offsets, alone.trace.offsets)
        assert torch.equal(part.token_ids, ids.reshape(-1)) and part.meta == alone.trace.meta
        for name in part.names:
            assert torch.equal(part[name], alone.trace[name]), name
    cell = nn.LSTMCell(3, 4)  # a cell recorded on its own: its steps so far are one sequence at take()
    steps = torch.randn(5, 2, 3)
    with torch.no_grad(), record(cell, kinds=["h"]) as rec:
        state = None
        for t, x in enumerate(steps):
            state = cell(x, state)
            taken = {2: 3, 4: 2}.get(t)  # steps since the last take
            if taken:
                part = rec.take()
                assert part.offsets.tolist() == [0, taken, 2 * taken]
                assert torch.equal(part["lstmcell.l0.fwd.h"][part.sequence(1)][-1], state[0][1])


def test_recording_restores_the_model():
    model = TinyLM("GRU")
    with record(model):
        pass
    assert "forward" not in model.rnn.__dict__


@pytest.mark.parametrize("cell,kwargs", CONFIGS)
def test_interventions_match_reference_loop(cell, kwargs):
    torch.manual_seed(3)
    model = TinyLM(cell, **kwargs).eval()
    ids = torch.randint(0, 11, (1, 6))
    last = "bwd" if kwargs.get("bidirectional") else "fwd"
    kinds = ("f", "c") if cell == "LSTM" else ("z", "n")
    edits = [
        Intervention(f"rnn.l0.fwd.{kinds[0]}", units=[1, 3], op="set", value=0.0),
        Intervention(f"rnn.l0.{last}.{kinds[1]}", units=[0], op="scale", value=2.5, steps=[2, 3]),
        Intervention("rnn.l0.fwd.h", units=[2], op="add", value=0.7, steps=range(4, 6)),
    ]

    def edit(name, t, value):
        for iv in edits:
            if iv.name == name and (iv.steps is None or t in iv.steps):
                value = value.clone()
                for u in iv.units:
                    value[u] = {"set": iv.value, "scale": value[u] * iv.value, "add": value[u] + iv.value}[iv.op]
        return value

    with torch.no_grad(), record(model, interventions=edits) as rec:
        model(ids)
    expected, _ = reference_run(model.rnn, model.embedding(ids[0]).detach(), edit=edit)
    for name, values in expected.items():
        assert torch.allclose(rec.trace[name], values, atol=ATOL), name
    # and the edit really changed later steps
    with torch.no_grad(), record(model) as clean:
        model(ids)
    assert not torch.allclose(clean.trace["rnn.l0.fwd.h"][5], rec.trace["rnn.l0.fwd.h"][5])


def test_patch_copies_counterfactual_values_and_hooks_see_every_step():
    torch.manual_seed(4)
    model = TinyLM("LSTM").eval()
    a, b = torch.randint(0, 11, (2, 1, 6))
    with torch.no_grad(), record(model) as source:
        model(b)
    donor = source.trace["rnn.l0.fwd.c"][:, [1, 4]].unsqueeze(0)  # (1, T, 2)
    seen = []
    patch = Intervention("rnn.l0.fwd.c", units=[1, 4], op="patch", value=donor)
    with torch.no_grad(), record(model, interventions=[patch],
                                 hooks={"rnn.l0.fwd.o": lambda v, t: seen.append(t)}) as rec:
        model(a)
    assert seen == list(range(6))
    assert torch.allclose(rec.trace["rnn.l0.fwd.c"][:, [1, 4]], donor[0])
    # patching every unit of c and h reproduces the donor run's output exactly
    full = [Intervention(f"rnn.l0.fwd.{k}", op="patch", value=source.trace[f"rnn.l0.fwd.{k}"].unsqueeze(0))
            for k in "ch"]
    with torch.no_grad(), record(model, interventions=full):
        out = model(a)
    assert torch.allclose(out, model(b), atol=ATOL)


def test_gradients_flow_through_recorded_values():
    torch.manual_seed(5)
    model = TinyLM("GRU").eval()
    ids = torch.randint(0, 11, (2, 5))
    with record(model) as rec:
        logits = model(ids)
    assert not rec.trace["rnn.l0.fwd.z"].requires_grad  # the trace is data; gradients come from rec
    grads = rec.gradients(logits[0, -1, 3])
    grad = grads["rnn.l0.fwd.z"]
    assert grad.shape == (10, 5) and grad[:5].abs().sum() > 0
    assert grad[5:].abs().sum() == 0  # the second sequence does not affect the first's logit
    # the gradient with respect to h at the last step is the decoder row: logit = W h + b
    assert torch.allclose(grads["rnn.l0.fwd.h"][4], model.decoder.weight[3], atol=1e-6)
    # a differentiable intervention: the gradient with respect to a scale equals finite differences
    scale = torch.ones(1, requires_grad=True)
    with record(model, interventions=[Intervention("rnn.l0.fwd.h", units=[2], op="scale", value=scale)]):
        y = model(ids)[0, -1, 3]
    (dscale,) = torch.autograd.grad(y, scale)
    eps = 1e-3
    with torch.no_grad():
        ys = []
        for s in (1 + eps, 1 - eps):
            with record(model, interventions=[Intervention("rnn.l0.fwd.h", units=[2], op="scale", value=s)]):
                ys.append(model(ids)[0, -1, 3])
    assert torch.allclose(dscale, (ys[0] - ys[1]) / (2 * eps), atol=1e-3)


@pytest.mark.parametrize("cls", [nn.LSTMCell, nn.GRUCell])
def test_cells_called_in_a_loop(cls):
    torch.manual_seed(6)

    class Loop(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = cls(3, 4)

        def forward(self, x):  # x (T, B, 3)
            h = None
            outs = []
            for xt in x:
                h = self.cell(xt, h)
                outs.append(h[0] if isinstance(h, tuple) else h)
            return torch.stack(outs)

    model = Loop()
    x = torch.randn(5, 2, 3)
    with torch.no_grad():
        expected = model(x)
        zero = Intervention("cell.l0.fwd.h", units=[0], op="set", value=0.0, steps=[4])
        with record(model, interventions=[zero]) as rec:
            got = model(x)
    assert torch.allclose(got[:4], expected[:4]) and got[4, :, 0].abs().max() == 0
    trace = rec.trace
    assert trace.offsets.tolist() == [0, 5, 10]
    # the cell's recorded h of sequence 1 is its outputs for batch row 1
    assert torch.allclose(trace["cell.l0.fwd.h"][5:], got[:, 1])
    ref = getattr(nn, cls.__name__.replace("Cell", ""))(3, 4)
    for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        getattr(ref, n + "_l0").data.copy_(getattr(model.cell, n))
    expected_q, _ = reference_run(ref, x[:, 0], path="cell")
    for name, values in expected_q.items():
        if not name.endswith(".h"):
            assert torch.allclose(trace[name][:4], values[:4], atol=ATOL), name


def test_bad_names_are_clear_errors():
    model = TinyLM("GRU")
    with pytest.raises(GatescopeError, match="has no kind 'c'"):
        with record(model, interventions=[Intervention("rnn.l0.fwd.c", units=[0])]):
            pass
    with pytest.raises(GatescopeError, match="no recurrent module 'enc'"):
        with record(model, hooks={"enc.l0.fwd.h": lambda v, t: None}):
            pass
    with pytest.raises(GatescopeError, match="not bidirectional"):
        with record(model, hooks={"rnn.l0.bwd.h": lambda v, t: None}):
            pass
    with pytest.raises(GatescopeError, match="no recurrent module decoder"):
        with record(model, modules=["decoder"]):
            pass
    with pytest.raises(GatescopeError, match="not a quantity name"):
        Intervention("rnn.h", units=[0])
    with pytest.raises(GatescopeError, match="no LSTM or GRU"):
        with record(nn.Linear(2, 2)):
            pass
    with pytest.raises(GatescopeError, match="select no quantity of the model; it has: rnn.l0.fwd.r"):
        record(model, kinds=["c"])  # an LSTM kind on a GRU: it would record nothing
    with pytest.raises(GatescopeError, match="no layer 1: the recorded modules have at most 1 layer"):
        record(model, layers=[0, 1])
    with pytest.raises(GatescopeError, match="select no quantity"):
        record(model, modules=[])
    assert record(model, kinds=()).trace.names == []  # nothing, asked for


def test_modules_with_different_sequence_lengths_must_be_recorded_separately():
    class EncDec(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.GRU(3, 4)
            self.decoder = nn.GRU(3, 4)

        def forward(self, src, tgt):
            _, h = self.encoder(src)
            return self.decoder(tgt, h)[0]

    model = EncDec()
    with record(model) as rec:
        model(torch.randn(6, 1, 3), torch.randn(4, 1, 3))
    with pytest.raises(GatescopeError, match="modules="):
        rec.trace
    with record(model, modules=["decoder"]) as rec:
        model(torch.randn(6, 1, 3), torch.randn(4, 1, 3))
    assert rec.trace.num_tokens == 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("route", ["step", "replay", "auto"])
def test_cuda_recording_matches_cpu(route):
    torch.manual_seed(7)
    model = TinyLM("LSTM", num_layers=2, bidirectional=True).eval()
    ids = torch.randint(0, 11, (3, 9))
    lengths = torch.tensor([9, 5, 2])
    with torch.no_grad(), record(model, route="step") as cpu:
        model(ids, lengths)
    model.cuda()
    with torch.no_grad(), record(model, route=route) as gpu:
        model(ids.cuda(), lengths)
    for name in cpu.trace.names:
        assert gpu.trace[name].is_cuda
        assert torch.allclose(gpu.trace[name].cpu(), cpu.trace[name], atol=1e-4), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_eval_mode_backward_works_with_gatescope_modules():
    lstm = gatescope.LSTM(3, 4).cuda().eval()
    x = torch.randn(5, 2, 3, device="cuda", requires_grad=True)
    lstm(x)[0].sum().backward()  # stock nn.LSTM raises: cudnn RNN backward can only be called in training mode
    assert x.grad is not None


def test_cells_with_a_shrinking_batch_record_each_sequence_to_its_length():
    torch.manual_seed(8)
    cell = nn.GRUCell(3, 4)
    x = torch.randn(4, 3, 3)  # (T, B, I), lengths 4, 2, 1: rows still running come first
    lengths = [4, 2, 1]

    class Loop(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = cell

        def forward(self, x):
            h = torch.zeros(3, 4)
            for t in range(4):
                active = sum(n > t for n in lengths)
                h = h.clone()
                h[:active] = self.cell(x[t, :active], h[:active])
            return h

    model = Loop()
    with torch.no_grad(), record(model) as rec:
        model(x)
    assert rec.trace.offsets.tolist() == [0, 4, 6, 7]
    for b, n in enumerate(lengths):
        h = torch.zeros(4)
        with torch.no_grad():
            for t in range(n):
                h = cell(x[t, b], h)
        assert torch.allclose(rec.trace["cell.l0.fwd.h"][rec.trace.sequence(b)][-1], h, atol=ATOL)


def test_a_cell_batch_that_loses_other_than_its_last_rows_is_refused_not_glued():
    """A mask over unsorted lengths keeps rows 1 and 2 where row 0 ended: read as a shrinking batch's first
    rows, sequence 0 would get sequence 1's later steps. The state handed in tells them apart."""
    torch.manual_seed(4)
    cell = nn.LSTMCell(5, 7)
    x = torch.randn(3, 5, 5)  # (B, T, I)
    lengths = torch.tensor([2, 5, 3])
    with pytest.raises(GatescopeError, match="at step 2 the batch shrank from 3 to 2 rows, but the state passed in "
                                             "is not the first 2 rows"), torch.no_grad(), record(cell):
        h, c = torch.zeros(3, 7), torch.zeros(3, 7)
        for t in range(5):
            running = lengths > t
            h_t, c_t = cell(x[running, t], (h[running], c[running]))
            h, c = h.clone(), c.clone()
            h[running], c[running] = h_t, c_t
    order = lengths.argsort(descending=True)  # the same loop over the sequences sorted longest first
    with torch.no_grad(), record(cell) as rec:
        h, c = torch.zeros(3, 7), torch.zeros(3, 7)
        for t in range(5):
            running = int((lengths > t).sum())
            h_t, c_t = cell(x[order[:running], t], (h[:running], c[:running]))
            h, c = h.clone(), c.clone()
            h[:running], c[:running] = h_t, c_t
    assert rec.trace.offsets.tolist() == [0, 5, 8, 10]
    for row, b in enumerate(order.tolist()):  # each sequence alone, through torch's own cell
        h, c, expected = torch.zeros(7), torch.zeros(7), []
        with torch.no_grad():
            for t in range(int(lengths[b])):
                h, c = cell(x[b, t], (h, c))
                expected.append(h)
        torch.testing.assert_close(rec.trace["lstmcell.l0.fwd.h"][rec.trace.sequence(row)], torch.stack(expected),
                                   atol=ATOL, rtol=0)


def test_an_intervention_that_changed_nothing_is_said_when_the_block_ends():
    """Steps beyond every sequence, or a module that never ran: the edit did nothing, and a result without
    it would read as "no effect". An edit that reached one call of the block is not warned of."""
    torch.manual_seed(4)
    lstm = nn.LSTM(5, 7, batch_first=True)
    late = Intervention("lstm.l0.fwd.h", units=[0], steps=[10])
    with pytest.warns(GatescopeWarning, match=r"intervention on lstm.l0.fwd.h changed nothing: its steps \(10\) lie "
                                              r"beyond every sequence lstm ran \(4 steps at most\)"):
        with torch.no_grad(), record(lstm, interventions=[late]):
            lstm(torch.randn(2, 4, 5))
    with pytest.warns(GatescopeWarning, match="changed nothing: lstm never ran in the block"):
        with record(lstm, interventions=[Intervention("lstm.l0.fwd.c", steps=slice(2, None))]):
            pass
    with warnings.catch_warnings(), pytest.raises(RuntimeError, match="the forward failed"):
        warnings.simplefilter("error", GatescopeWarning)  # a block ended by an error says that alone
        with record(lstm, interventions=[late]):
            raise RuntimeError("the forward failed")
    with warnings.catch_warnings():
        warnings.simplefilter("error", GatescopeWarning)
        with torch.no_grad(), record(lstm, interventions=[late]) as rec:
            lstm(torch.randn(2, 4, 5))
            lstm(torch.randn(1, 11, 5))  # the second call reaches step 10
        assert rec.trace["lstm.l0.fwd.h"][rec.trace.sequence(2)][10, 0] == 0
        cell = nn.GRUCell(3, 4)
        with torch.no_grad(), record(cell, interventions=[Intervention("grucell.l0.fwd.h", steps=[2])]):
            h = torch.zeros(1, 4)
            for _ in range(3):  # a cell's steps are counted call by call
                h = cell(torch.randn(1, 3), h)
        assert h.abs().max() == 0


def test_steps_from_a_start_on_have_no_horizon():
    torch.manual_seed(9)
    model = TinyLM("GRU").eval()
    ids = torch.randint(0, 11, (1, 9))
    with torch.no_grad(), record(model, interventions=[Intervention("rnn.l0.fwd.h", units=[1], op="set", value=0.0,
                                                                    steps=slice(6, None))]) as rec:
        model(ids)
    with torch.no_grad(), record(model, interventions=[Intervention("rnn.l0.fwd.h", units=[1], op="set", value=0.0,
                                                                    steps=range(6, 9))]) as listed:
        model(ids)
    h = rec.trace["rnn.l0.fwd.h"]
    assert h[6:, 1].abs().max() == 0 and h[:6, 1].abs().min() > 0
    assert torch.equal(h, listed.trace["rnn.l0.fwd.h"])
    with pytest.raises(GatescopeError, match="stride"):
        Intervention("rnn.l0.fwd.h", units=[1], steps=slice(0, 9, 2))


# -- no silent edits, no wrong answers ------------------------------------------------------------
@pytest.mark.parametrize("units, match", [
    ([9], r"unit\(s\) 9 out of range; rnn.l0.fwd.h has 5 units"),
    ([3, 4, 5], r"unit\(s\) 5 out of range; rnn.l0.fwd.h has 5 units"),
    ([-1], "unit indices are >= 0"),
    ([], "selects no unit"),
])
def test_intervention_units_are_checked_against_the_width_before_the_forward(units, match):
    model = TinyLM("GRU")
    calls = []
    model.rnn.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(GatescopeError, match=match):
        with record(model, interventions=[Intervention("rnn.l0.fwd.h", units=units)]):
            model(torch.randint(0, 11, (1, 3)))
    assert calls == []  # refused before anything ran
    with pytest.raises(GatescopeError, match="the value has 3 units in its last dimension, the intervention edits 2"):
        record(model, interventions=[Intervention("rnn.l0.fwd.h", units=[0, 1], value=torch.zeros(3))])
    proj = TinyLM("LSTM", proj_size=3)  # h of a projected LSTM is proj_size wide, the other kinds hidden_size
    with pytest.raises(GatescopeError, match="rnn.l0.fwd.h has 3 units"):
        record(proj, interventions=[Intervention("rnn.l0.fwd.h", units=[3])])
    record(proj, interventions=[Intervention("rnn.l0.fwd.c", units=[4])])


def _edit_like(edits):
    """The reference loop's edit function applying ``edits`` (set/scale/add) in order."""
    def edit(name, t, value):
        for iv in edits:
            if iv.name == name and (iv.steps is None or t in iv.steps):
                value = value.clone()
                for u in iv.units:
                    value[u] = {"set": iv.value, "scale": value[u] * iv.value, "add": value[u] + iv.value}[iv.op]
        return value
    return edit


def test_nested_blocks_compose_in_nesting_order():
    torch.manual_seed(10)
    model = TinyLM("LSTM").eval()
    ids = torch.randint(0, 11, (1, 6))
    outer_edit = Intervention("rnn.l0.fwd.h", units=[1], op="add", value=0.5)
    inner_edit = Intervention("lstm.l0.fwd.h", units=[1], op="scale", value=3.0)  # model.rnn's own name
    seen = []
    with torch.no_grad(), record(model, interventions=[outer_edit]) as outer:
        model(ids[:, :4])
        hooks = {"lstm.l0.fwd.f": lambda v, t: seen.append(t)}
        with record(model.rnn, interventions=[inner_edit], hooks=hooks) as inner:
            model(ids)
        model(ids[:, :2])
    assert seen == list(range(6))
    assert outer.trace.offsets.tolist() == [0, 4, 10, 12]  # the outer block saw the inner block's call
    assert inner.trace.num_tokens == 6 and inner.trace.names[0] == "lstm.l0.fwd.i"
    inner_as_rnn = Intervention("rnn.l0.fwd.h", units=[1], op="scale", value=3.0)
    both, _ = reference_run(model.rnn, model.embedding(ids[0]).detach(), edit=_edit_like([outer_edit, inner_as_rnn]))
    for name, values in both.items():
        assert torch.allclose(outer.trace[name][4:10], values, atol=ATOL), name
        assert torch.equal(inner.trace[name.replace("rnn.", "lstm.", 1)], outer.trace[name][4:10])
    alone, _ = reference_run(model.rnn, model.embedding(ids[0, :4]).detach(), edit=_edit_like([outer_edit]))
    assert torch.allclose(outer.trace["rnn.l0.fwd.h"][:4], alone["rnn.l0.fwd.h"], atol=ATOL)
    assert "forward" not in model.rnn.__dict__  # restored once the last block ended


def test_token_ids_follow_the_modules_layout_even_when_time_equals_batch():
    class TimeMajor(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(11, 4)
            self.rnn = nn.GRU(4, 5)  # batch_first=False: ids are (T, B)

        def forward(self, ids):
            return self.rnn(self.embedding(ids))[0]

    model = TimeMajor()
    ids = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]])  # (T=3, B=3): column b is sequence b
    with torch.no_grad(), record(model) as rec:
        model(ids)
    assert rec.trace.token_ids.tolist() == ids.t().reshape(-1).tolist()
    assert rec.trace.tokens(0, 3) == ["1", "4", "7"]

    class BatchFirstIds(nn.Module):  # takes (B, T) ids and transposes them for a time-major GRU
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(11, 4)
            self.rnn = nn.GRU(4, 5)

        def forward(self, ids):
            return self.rnn(self.embedding(ids.t()))[0]

    model = BatchFirstIds()
    with torch.no_grad(), record(model, batch_first=True) as rec:  # the caller says what the module cannot
        model(ids)
    assert rec.trace.token_ids.tolist() == ids.reshape(-1).tolist()
    with torch.no_grad(), record(model) as rec:
        model(torch.randint(0, 11, (2, 5)))  # (B=2, T=5) where the GRU expects (T, B): the layouts disagree
    with pytest.warns(UserWarning, match=r"no token ids: .*shape \[2, 5\].*batch_first"):
        assert rec.trace.token_ids is None


def test_the_trace_holds_detached_values_and_consumers_work_with_grad_enabled(tmp_path):
    from gatescope.analysis import plot_gate_profile, rank_units

    torch.manual_seed(11)
    model = TinyLM("LSTM").eval()
    ids = torch.randint(0, 11, (2, 6))
    with record(model) as rec:  # outside no_grad, as the README's first example
        logits = model(ids)
    assert logits.requires_grad
    assert not any(rec.trace[name].requires_grad for name in rec.trace)
    plot_gate_profile(rec.trace, "rnn.l0.fwd.h:1", [0, 1], tmp_path / "profile.png")
    assert (tmp_path / "profile.png").stat().st_size > 0
    rec.trace.add_feature("even", (rec.trace.token_ids % 2 == 0).float())
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(rank_units(rec.trace, feature="even", permutations=0)) > 0
    assert not Trace({"rnn.l0.fwd.h": torch.ones(2, 3, requires_grad=True)}, [0, 2])["rnn.l0.fwd.h"].requires_grad


def test_gradients_on_a_frozen_model_equal_those_of_the_unfrozen_one():
    torch.manual_seed(12)
    model = TinyLM("LSTM", num_layers=2).eval()
    ids = torch.randint(0, 11, (2, 5))
    with record(model) as rec:
        y = model(ids)[0, -1, 3]
    expected = rec.gradients(y)
    model.requires_grad_(False)
    with record(model) as rec:
        y = model(ids)[0, -1, 3]
    got = rec.gradients(y)
    assert got.keys() == expected.keys()
    for name in got:
        assert torch.allclose(got[name], expected[name], atol=1e-6), name
    assert torch.allclose(got["rnn.l1.fwd.h"][4], model.decoder.weight[3])
    with pytest.raises(GatescopeError, match="rnn.l5.fwd.h: not kept by this recording"):
        rec.gradients(y, ["rnn.l5.fwd.h"])
    with torch.no_grad(), record(model) as rec:
        model(ids)
    with pytest.raises(GatescopeError, match="record with grad enabled"):
        rec.gradients(torch.ones(()))


def test_a_root_of_a_users_own_class_is_named_after_torchs_class_everywhere():
    from gatescope.analysis import weight_timescales

    class MyLSTM(nn.LSTM):
        pass

    lstm = MyLSTM(3, 4)
    with torch.no_grad(), record(lstm) as rec:
        lstm(torch.randn(5, 1, 3))
    assert rec.trace.names[0] == "lstm.l0.fwd.i"
    assert list(gatescope.quantities(lstm)) == rec.trace.names
    assert set(weight_timescales(lstm)["name"]) == {"lstm.l0.fwd.f"}
    assert rec.trace.meta["modules"][0]["cell"] == "LSTM"


def test_intervention_equality_and_hashing_never_raise():
    a = Intervention("rnn.l0.fwd.h", units=[1, 2], op="scale", value=torch.tensor([2.0, 3.0]), steps=slice(4, None))
    b = Intervention("rnn.l0.fwd.h", units=(1, 2), op="scale", value=torch.tensor([2.0, 3.0]), steps=slice(4, None))
    c = Intervention("rnn.l0.fwd.h", units=[1, 2], op="scale", value=torch.tensor([2.0, 4.0]), steps=slice(4, None))
    nan = Intervention("rnn.l0.fwd.h", op="patch", value=torch.full((1, 2, 5), float("nan")))
    assert a == b and hash(a) == hash(b) and a != c and len({a, b, c}) == 2
    assert nan == Intervention("rnn.l0.fwd.h", op="patch", value=torch.full((1, 2, 5), float("nan")))
    listed = Intervention("rnn.l0.fwd.h", value=0.0, steps=[1, 2])
    assert listed == Intervention("rnn.l0.fwd.h", value=0.0, steps=(2, 1))
    assert a != Intervention("rnn.l0.fwd.h", units=[1, 2], op="scale", value=2.0, steps=slice(4, None))
    assert a != "rnn.l0.fwd.h"


def test_the_replay_route_never_cuts_outputs_from_the_graph():
    torch.manual_seed(18)
    step, replay = gatescope.LSTM(3, 4, num_layers=2), gatescope.LSTM(3, 4, num_layers=2)
    replay.load_state_dict(step.state_dict())
    step.route, replay.route = "step", "replay"
    x = torch.randn(5, 2, 3, requires_grad=True)
    out, _ = replay(x)  # grad needed: the step route runs, and the outputs stay in the graph
    assert out.requires_grad
    expected = torch.autograd.grad(step(x)[0].pow(2).sum(), [x, *step.parameters()])
    got = torch.autograd.grad(out.pow(2).sum(), [x, *replay.parameters()])
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)
    gru = nn.GRU(3, 4)
    with record(gru, route="replay") as rec:
        out, _ = gru(x)
    assert out.requires_grad and rec.gradients(out.sum())["gru.l0.fwd.h"].abs().sum() > 0
    frozen = nn.GRU(3, 4).requires_grad_(False)
    with record(frozen, route="replay") as rec:
        out, _ = frozen(x.detach())  # grad enabled, but nothing requires grad: no graph to keep, replay runs
    assert not out.requires_grad
    with pytest.raises(GatescopeError, match="not on the replay route"):
        rec.gradients(out.sum())
    with pytest.raises(GatescopeError, match="replay route cannot apply interventions"):
        record(frozen, route="replay", interventions=[Intervention("gru.l0.fwd.h", units=[0])])


# -- the hook API ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cell,kwargs", CONFIGS)
def test_quantities_are_every_recorded_name_with_its_width_without_running(cell, kwargs):
    model = TinyLM(cell, **kwargs)
    widths = gatescope.quantities(model)
    with torch.no_grad(), record(model) as rec:
        model(torch.randint(0, 11, (2, 3)))
    assert widths == {name: rec.trace[name].shape[1] for name in rec.trace.names}


def test_hooks_by_selector_get_the_hook_context_and_edit_like_the_reference():
    torch.manual_seed(13)
    model = TinyLM("LSTM", num_layers=2, bidirectional=True).eval()
    ids = torch.randint(0, 11, (1, 5))
    seen = []

    def look(value, hook):
        assert hook.module is model.rnn and hook.path == "rnn"
        seen.append((hook.name, hook.layer, hook.direction, hook.kind, hook.step))
        hook.ctx["calls"] = hook.ctx.get("calls", 0) + 1

    def zero_at_2(value, hook):  # fn(value, hook) returns the replacement
        if hook.step == 2:
            value = value.clone()
            value[:, 1] = 0.0
            return value
        return None

    hooks = [("*.f", look), ("rnn.l1.*.c", zero_at_2), (lambda n: n.endswith("l0.bwd.g"), look)]
    with torch.no_grad(), record(model, hooks=hooks) as rec:
        model(ids)
    assert {s[0] for s in seen} == {f"rnn.l{k}.{d}.f" for k in (0, 1) for d in ("fwd", "bwd")} | {"rnn.l0.bwd.g"}
    assert sorted(s[4] for s in seen if s[0] == "rnn.l1.bwd.f") == list(range(5))
    assert ("rnn.l0.bwd.f", 0, "bwd", "f", 4) in seen
    assert rec.hook("rnn.l0.fwd.f").ctx["calls"] == 5  # one context per quantity, for the recording's life

    def edit(name, t, value):
        if name in ("rnn.l1.fwd.c", "rnn.l1.bwd.c") and t == 2:
            value = value.clone()
            value[1] = 0.0
        return value

    expected, _ = reference_run(model.rnn, model.embedding(ids[0]).detach(), edit=edit)
    for name, values in expected.items():
        assert torch.allclose(rec.trace[name], values, atol=ATOL), name


@pytest.mark.parametrize("selector, match", [
    ("*.z", "selector '\\*.z' matches no quantity; the model has: rnn.l0.fwd.i"),
    (lambda n: False, "matches no quantity"),
    ([], "empty list of selectors"),
    ("rnn.l0.fwd.r", "LSTM has no kind 'r'"),
    (3, "not a selector: 3"),
])
def test_a_selector_that_matches_nothing_is_an_error(selector, match):
    model = TinyLM("LSTM")
    with pytest.raises(GatescopeError, match=match):
        record(model, hooks=[(selector, lambda v, hook: None)])
    with pytest.raises(GatescopeError, match=match):
        gatescope.run_with_cache(model, torch.zeros(1, 2, dtype=torch.long), names=selector)
    with pytest.raises(GatescopeError, match="a hook is a pair"):
        record(model, hooks=[lambda v, hook: None])
    assert list(record(model, hooks=("*.h", lambda v, hook: None)).edits) == ["rnn.l0.fwd.h"]  # one pair alone


def test_run_with_cache_returns_the_output_and_the_selected_quantities():
    torch.manual_seed(14)
    model = TinyLM("GRU", num_layers=2, bidirectional=True).eval()
    ids = torch.randint(0, 11, (2, 4))
    with torch.no_grad():
        out, trace = gatescope.run_with_cache(model, ids, names=["rnn.l1.*.h", "rnn.l0.fwd.z"])
        assert torch.allclose(out, model(ids), atol=ATOL)
        with record(model) as rec:
            model(ids)
    assert trace.names == ["rnn.l0.fwd.z", "rnn.l1.fwd.h", "rnn.l1.bwd.h"]
    for name in trace.names:
        assert torch.equal(trace[name], rec.trace[name])
    assert trace.token_ids.tolist() == ids.reshape(-1).tolist()
    lengths = torch.tensor([4, 2])
    _, packed = gatescope.run_with_cache(model, ids, lengths=lengths, names="*.h")  # kwargs go to the model
    assert packed.offsets.tolist() == [0, 4, 6]


def test_a_trace_padded_is_a_patch_source_for_another_run():
    torch.manual_seed(15)
    model = TinyLM("LSTM").eval()
    a, b = torch.randint(0, 11, (2, 3, 6))
    with torch.no_grad():
        _, donor = gatescope.run_with_cache(model, b, names="rnn.l0.fwd.[ch]")
        full = [Intervention(n, op="patch", value=donor.padded(n)) for n in donor.names]  # (B, T, H) each
        with record(model, interventions=full) as rec:
            out = model(a)
        assert torch.allclose(out, model(b), atol=ATOL)
        some = Intervention("rnn.l0.fwd.c", units=[1, 4], op="patch", value=donor.padded("rnn.l0.fwd.c")[:, :, [1, 4]])
        with record(model, interventions=[some]) as rec:
            model(a)
    assert torch.equal(rec.trace["rnn.l0.fwd.c"][:, [1, 4]], donor["rnn.l0.fwd.c"][:, [1, 4]])


def test_nested_blocks_on_a_cell_loop_count_steps_and_apply_both_edits():
    torch.manual_seed(16)

    class Loop(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = nn.LSTMCell(3, 4)

        def forward(self, x):  # x (T, B, 3)
            state, outs = None, []
            for xt in x:
                state = self.cell(xt, state)
                outs.append(state[0])
            return torch.stack(outs)

    model = Loop()
    x = torch.randn(5, 2, 3)
    with torch.no_grad():
        state, expected = None, []
        for t, xt in enumerate(x):  # the loop by hand: h unit 1 set to 0 at step 2, then unit 0 at step 4
            h, c = model.cell(xt, state)
            if t == 2:
                h = h.clone()
                h[:, 1] = 0.0
            if t == 4:
                h = h.clone()
                h[:, 0] = 0.0
            state = (h, c)
            expected.append(h)
        expected = torch.stack(expected)
        outer_edit = Intervention("cell.l0.fwd.h", units=[0], op="set", value=0.0, steps=[4])
        inner_edit = Intervention("lstmcell.l0.fwd.h", units=[1], op="set", value=0.0, steps=[2])
        with record(model, interventions=[outer_edit]) as outer:
            with record(model.cell, interventions=[inner_edit]) as inner:
                got = model(x)
    assert torch.allclose(got, expected, atol=ATOL)
    assert outer.trace.offsets.tolist() == [0, 5, 10] and inner.trace.offsets.tolist() == [0, 5, 10]
    assert torch.equal(outer.trace["cell.l0.fwd.h"][5:], got[:, 1])
    assert torch.equal(inner.trace["lstmcell.l0.fwd.c"], outer.trace["cell.l0.fwd.c"])


def test_gradients_through_a_cell_whose_batch_shrinks():
    torch.manual_seed(17)
    cell = nn.GRUCell(3, 4)
    x = torch.randn(4, 3, 3)  # (T, B, I), lengths 4, 2, 1
    lengths = [4, 2, 1]

    class Loop(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = cell

        def forward(self, x):
            h = torch.zeros(3, 4)
            for t in range(4):
                active = sum(n > t for n in lengths)
                h = torch.cat([self.cell(x[t, :active], h[:active]), h[active:]])
            return h  # each sequence's state after its own last step

    model = Loop()
    with record(model) as rec:
        final = model(x)
    grads = rec.gradients(final.sum(), ["cell.l0.fwd.h", "cell.l0.fwd.z"])
    assert grads["cell.l0.fwd.h"].shape == rec.trace["cell.l0.fwd.h"].shape == (7, 4)
    last_rows = rec.trace.offsets[1:] - 1
    assert torch.equal(grads["cell.l0.fwd.h"][last_rows], torch.ones(3, 4))  # d sum(final) / d last h = 1
    # the gradient for z at sequence 0's first step, by finite differences through a hook
    eps = 1e-3
    ys = []
    for sign in (1, -1):
        def nudge(value, hook, sign=sign):
            if hook.step == 0:
                value = value.clone()
                value[0, 2] += sign * eps
                return value
            return None
        with torch.no_grad(), record(model, hooks=[("cell.l0.fwd.z", nudge)]):
            ys.append(model(x).sum())
    assert torch.allclose(grads["cell.l0.fwd.z"][0, 2], (ys[0] - ys[1]) / (2 * eps), atol=1e-3)


@pytest.mark.parametrize("layout", ["time major", "a workspace's columns", "by sequence"])
def test_rows_are_each_sequences_steps_in_order_whatever_the_layout(layout):
    from gatescope.recorder.rows import to_rows

    values = torch.randn(5, 4, 3)  # (T, B, H) as the engine hands them over, or (B, T, H) contiguous
    lengths = torch.tensor([5, 2, 0, 4])
    by_sequence = {
        "time major": lambda: values.transpose(0, 1),
        "a workspace's columns": lambda: torch.randn(5, 4, 8)[..., 2:5].transpose(0, 1),  # rows 8 apart
        "by sequence": lambda: values.reshape(4, 5, 3),
    }[layout]()
    expected = torch.cat([by_sequence[b, :n] for b, n in enumerate(lengths.tolist())])
    assert torch.equal(to_rows(by_sequence, lengths), expected)
    for dtype in (torch.float16, torch.bfloat16):  # the storage dtype, converted on the way
        assert torch.equal(to_rows(by_sequence, lengths, dtype), expected.to(dtype))
    whole = torch.cat(list(by_sequence))  # every sequence all T steps (lengths None or all T)
    for given in (None, torch.full((4,), 5)):
        for dtype in (None, torch.float16):
            rows = to_rows(by_sequence, given, dtype)
            assert rows.dtype == (dtype or torch.float32) and torch.equal(rows, whole.to(rows.dtype))
    assert to_rows(torch.empty(0, 5, 3), None, torch.float16).shape == (0, 3)
