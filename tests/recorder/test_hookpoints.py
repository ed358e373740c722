"""Hook-point modules: names, per-step and per-sequence edits against Intervention, captum on gates."""
import pytest
import torch
from torch import nn

import gatescope
from gatescope import Intervention, record, run_with_cache, sample_models
from gatescope.analysis.attribution import gradient_x_activation, logit_difference_target
from gatescope.errors import GatescopeError
from gatescope.recorder.hookpoints import HookPoint, hook_points

F_GATE = "rnn.l0.fwd.f"


class LM(nn.Module):
    def __init__(self, cell=nn.LSTM, vocab=11, hidden=6, **kwargs):
        super().__init__()
        self.embedding = nn.Embedding(vocab, 4)
        self.rnn = cell(4, hidden, batch_first=True, **kwargs)
        self.decoder = nn.Linear(hidden * (2 if kwargs.get("bidirectional") else 1), vocab)

    def forward(self, ids):
        return self.decoder(self.rnn(self.embedding(ids))[0])


class FromEmbeddings(nn.Module):
    """A language model from its embeddings on: captum's input methods need float inputs."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, embedded):
        return self.lm.decoder(self.lm.rnn(embedded)[0])


def stock(cell=nn.LSTM, **kwargs):
    torch.manual_seed(0)
    return LM(cell, **kwargs).eval(), torch.randint(1, 11, (3, 5))


def agreement():
    torch.manual_seed(0)
    return gatescope.load(sample_models.path("agreement_lstm.safetensors")), torch.randint(1, 96, (2, 4))


def edited(model, ids, *interventions):
    with torch.no_grad(), record(model, interventions=list(interventions)):
        return model(ids)


def zero_unit(unit, first):
    """A forward hook zeroing ``unit`` from step ``first`` on, on either kind of point."""
    def hook(point, args, out):
        out = out.clone()
        if point.per == "step":
            if point.step >= first:
                out[:, unit] = 0.0
        else:
            out[:, first:, unit] = 0.0
        return out
    return hook


# -- names ----------------------------------------------------------------------------------------------
def test_every_quantity_is_a_module_under_hooks_and_the_output_too():
    model, _ = stock(nn.GRU, num_layers=2, bidirectional=True)
    hooked = hook_points(model)
    names = list(gatescope.quantities(model))
    assert hooked.names == names and "rnn.l1.bwd.z" in names
    for name in names:
        point = hooked.get_submodule("hooks." + name)
        assert isinstance(point, HookPoint) and point is hooked.points[name] and point.name == name
    assert hooked.get_submodule("hooks.rnn.out") is hooked.outputs["rnn"]
    assert hooked.model is model
    assert list(hook_points(model, names="*.z").points) == ["rnn.l0.fwd.z", "rnn.l0.bwd.z", "rnn.l1.fwd.z",
                                                             "rnn.l1.bwd.z"]


def test_bad_arguments_are_one_line_errors():
    model, ids = stock()
    with pytest.raises(GatescopeError, match="matches no quantity"):
        hook_points(model, names="*.z")
    with pytest.raises(GatescopeError, match="has no kind 'z'"):
        hook_points(model, names="rnn.l0.fwd.z")
    with pytest.raises(GatescopeError, match="per='time'.*per 'step'"):
        hook_points(model, per="time")
    with pytest.raises(GatescopeError, match="no LSTM or GRU"):
        hook_points(nn.Linear(2, 2))
    hooked = hook_points(model, per="sequence")
    hooked.points[F_GATE].register_forward_hook(lambda m, a, out: out[:, :2])
    with pytest.raises(GatescopeError, match=r"returned \(3, 2, 6\).*\(3, 5, 6\)"):
        hooked(ids)
    hooked = hook_points(model)
    hooked.points[F_GATE].register_forward_hook(lambda m, a, out: out[:2])
    with pytest.raises(GatescopeError, match=r"returned \(2, 6\) at step 0.*\(3, 6\)"):
        hooked(ids)


@pytest.mark.parametrize("per", ["step", "sequence"])
def test_nothing_lingers_on_the_model_after_hook_points_ran(per):
    from gatescope.recorder.recording import _STACKS

    model, ids = stock()
    hooked = hook_points(model, per=per)
    hooked.points[F_GATE].register_forward_hook(zero_unit(3, 2))
    hooked(ids)
    for module in model.modules():  # plain recording runs exactly as on a model never given hook points
        assert "forward" not in module.__dict__ and not module._forward_hooks and not module._forward_pre_hooks
        assert module not in _STACKS


def test_a_module_called_twice_in_one_forward_needs_per_step_points():
    model, ids = stock()
    twice = nn.Sequential(model.embedding, model.rnn)
    twice.forward = lambda x: model.rnn(model.rnn(model.embedding(x))[0][..., :4])[0]
    with pytest.raises(GatescopeError, match="step 0 came twice"):
        hook_points(twice, per="sequence")(ids)
    assert hook_points(twice)(ids).shape == (3, 5, 6)


# -- values and edits against record() and Intervention ---------------------------------------------------
@pytest.mark.parametrize("cell,name", [(nn.LSTM, "rnn.l1.bwd.f"), (nn.GRU, "rnn.l1.bwd.z"), (nn.LSTM, "rnn.l0.fwd.c")])
def test_step_points_read_each_step_and_edit_like_an_intervention(cell, name):
    model, ids = stock(cell, num_layers=2, bidirectional=True)
    hooked = hook_points(model)
    seen = {}
    hooked.points[name].register_forward_hook(lambda point, args, out: seen.__setitem__(point.step, out.clone()))
    with torch.no_grad():
        hooked(ids)
    _, trace = run_with_cache(model, ids, names=name)
    assert sorted(seen) == list(range(5)) and hooked.points[name].context.name == name
    assert torch.equal(torch.stack([seen[t] for t in range(5)], 1), trace.padded(name))
    hooked.points[name].register_forward_hook(zero_unit(3, 2))
    with torch.no_grad():
        got = hooked(ids)
    want = edited(model, ids, Intervention(name, [3], "set", 0.0, steps=slice(2, None)))
    assert (got - edited(model, ids)).abs().max() > 1e-3
    assert torch.allclose(got, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("cell,name", [(nn.LSTM, "rnn.l1.bwd.f"), (nn.GRU, "rnn.l0.fwd.n")])
def test_sequence_points_read_the_trace_and_patch_like_an_intervention(cell, name, grad):
    model, ids = stock(cell, num_layers=2, bidirectional=True)
    other = torch.randint(1, 11, ids.shape)
    hooked = hook_points(model, per="sequence")
    _, trace = run_with_cache(model, ids, names=name)
    _, counterfactual = run_with_cache(model, other, names=name)
    source = counterfactual.padded(name)  # (B, T, H)
    with torch.set_grad_enabled(grad):
        assert torch.allclose(hooked(ids), edited(model, ids), atol=1e-6, rtol=0)  # no edit: the model as is
        seen = []
        point = hooked.points[name]
        handle = point.register_forward_hook(lambda p, a, out: seen.append(out.detach().clone()))
        hooked(ids)
        handle.remove()
        assert len(seen) == 1 and torch.equal(seen[0], trace.padded(name))
        handle = point.register_forward_hook(zero_unit(3, 2))
        zeroed = hooked(ids)
        handle.remove()

        def interchange(p, a, out):
            out = out.clone()
            out[:, 1:3, 2:4] = source[:, 1:3, 2:4]
            return out

        point.register_forward_hook(interchange)
        swapped = hooked(ids)
    assert torch.allclose(zeroed, edited(model, ids, Intervention(name, [3], "set", 0.0, steps=slice(2, None))),
                          atol=1e-6, rtol=0)
    want = edited(model, ids, Intervention(name, [2, 3], "patch", source[:, :, 2:4], steps=[1, 2]))
    assert (swapped - edited(model, ids)).abs().max() > 1e-3
    assert torch.allclose(swapped, want, atol=1e-6, rtol=0)


def test_sequence_points_draw_the_same_dropout_masks_in_both_forwards():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(11, 4), nn.Dropout(0.5))
    lm = LM(num_layers=2, dropout=0.5).train()
    lm.embedding = model  # dropout before the LSTM and between its layers
    ids = torch.randint(1, 11, (3, 5))
    hooked = hook_points(lm, per="sequence")
    torch.manual_seed(1)
    with torch.no_grad(), record(lm, kinds=()):
        want = lm(ids)
    after = torch.rand(1)
    torch.manual_seed(1)
    with torch.no_grad():
        got = hooked(ids)
    assert torch.allclose(got, want, atol=1e-6, rtol=0) and torch.equal(torch.rand(1), after)


def test_a_recording_around_sequence_points_is_refused_and_step_points_nest():
    model, ids = stock()
    with pytest.raises(GatescopeError, match="rnn is being recorded"), record(model):
        hook_points(model, per="sequence")(ids)
    hooked = hook_points(model)
    hooked.points[F_GATE].register_forward_hook(zero_unit(3, 2))
    with torch.no_grad(), record(model, names=F_GATE) as rec:
        hooked(ids)
    assert torch.equal(rec.trace.padded(F_GATE)[:, 2:, 3], torch.zeros(3, 3))
    assert rec.trace.padded(F_GATE)[:, :2, 3].abs().min() > 0


@pytest.mark.parametrize("per", ["step", "sequence"])
def test_a_cell_loop_through_hook_points(per):
    torch.manual_seed(0)
    cell = nn.LSTMCell(4, 6)
    x = torch.randn(5, 3, 4)

    class Loop(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = cell

        def forward(self, x):
            h = c = torch.zeros(x.shape[1], 6)
            for xt in x:
                h, c = self.cell(xt, (h, c))
            return h

    loop = Loop()
    hooked = hook_points(loop, per=per)
    assert "cell" not in hooked.outputs  # a cell's output is one step's state, not a sequence
    hooked.points["cell.l0.fwd.f"].register_forward_hook(zero_unit(1, 3))
    with torch.no_grad():
        got = hooked(x)
    want = edited(loop, x, Intervention("cell.l0.fwd.f", [1], "set", 0.0, steps=slice(3, None)))
    assert (got - edited(loop, x)).abs().max() > 1e-4
    assert torch.allclose(got, want, atol=1e-6, rtol=0)


def test_a_packed_sequence_through_sequence_points_and_the_out_point():
    from torch.nn.utils.rnn import pack_padded_sequence

    torch.manual_seed(0)
    rnn = gatescope.GRU(4, 6, batch_first=True)
    x = torch.randn(3, 5, 4)
    packed = pack_padded_sequence(x, torch.tensor([5, 3, 2]), batch_first=True, enforce_sorted=False)
    hooked = hook_points(rnn, per="sequence")
    hooked.points["gru.l0.fwd.z"].register_forward_hook(zero_unit(2, 1))
    hooked.outputs["gru"].register_forward_hook(lambda point, args, out: out * 2)
    with torch.no_grad():
        out, h_n = hooked(packed)
    with torch.no_grad(), record(rnn, interventions=[Intervention("gru.l0.fwd.z", [2], "set", 0.0,
                                                                  steps=slice(1, None))]):
        want, want_h = rnn(packed)
    assert torch.allclose(out.data, 2 * want.data, atol=1e-6) and torch.allclose(h_n, want_h, atol=1e-6)


@pytest.mark.parametrize("watch", [F_GATE, "rnn.l0.fwd.c", None])
def test_input_gradients_through_sequence_points_are_the_models(watch):
    model, ids = stock(num_layers=2)
    lm = FromEmbeddings(model)
    embedded = model.embedding(ids).detach()
    hooked = hook_points(lm, per="sequence")
    if watch:  # a watched point is patched in: the gradient reaches x through the first forward instead
        hooked.points["lm." + watch].register_forward_hook(lambda point, args, out: None)
    grads = []
    for run in (lm, hooked):
        x = embedded.clone().requires_grad_()
        with record(model, kinds=()) if run is lm else torch.enable_grad():
            run(x)[:, -1, :3].sum().backward()
        grads.append(x.grad)
    assert grads[0].abs().max() > 1e-3
    assert torch.allclose(grads[1], grads[0], atol=1e-6)


# -- captum -----------------------------------------------------------------------------------------------
MODELS = {"agreement": agreement, "stock": stock}


def captum_setup(which):
    model, ids = MODELS[which]()
    batch = ids.shape[0]
    target = logit_difference_target(-1, list(range(1, batch + 1)), list(range(5, batch + 5)))
    return model, ids, target


@pytest.mark.parametrize("which", list(MODELS))
def test_layer_integrated_gradients_on_a_gate_are_complete(which):
    from captum.attr import LayerIntegratedGradients

    model, ids, target = captum_setup(which)
    hooked = hook_points(model, per="sequence")
    baseline = torch.zeros_like(ids)
    lig = LayerIntegratedGradients(lambda x: target(hooked(x)), hooked.get_submodule("hooks." + F_GATE))
    attr = lig.attribute(ids, baselines=baseline, n_steps=32)
    _, base = run_with_cache(model, baseline, names=F_GATE)
    # the gate's baseline is its value on the baseline input, patched in at every step
    expected = target(edited(model, ids)) - target(edited(model, ids, Intervention(F_GATE, None, "patch",
                                                                                   base.padded(F_GATE))))
    assert attr.shape == (*ids.shape, gatescope.quantities(model)[F_GATE]) and not model.training
    assert expected.abs().min() > 1e-3
    assert torch.allclose(attr.sum((1, 2)), expected, atol=1e-4)


@pytest.mark.parametrize("which", list(MODELS))
def test_layer_gradient_x_activation_on_a_gate_agrees_with_gatescope(which):
    from captum.attr import LayerGradientXActivation

    model, ids, target = captum_setup(which)
    hooked = hook_points(model, per="sequence")
    gxa = LayerGradientXActivation(lambda x: target(hooked(x)), hooked.points[F_GATE]).attribute(ids)
    ours = gradient_x_activation(model, ids, target, [F_GATE])[F_GATE]  # (B, T, H)
    # the last step has no later value of the gate: captum's layer (the gate held at every step) and
    # gatescope's per-step credit (everything downstream, later gate values too) agree there
    assert ours[:, -1].abs().max() > 1e-3
    assert torch.allclose(gxa[:, -1], ours[:, -1], atol=1e-6)
    # earlier steps: the gradient of the model with the gate patched in, by autograd through Intervention
    _, trace = run_with_cache(model, ids, names=F_GATE)
    value = trace.padded(F_GATE).requires_grad_()
    with record(model, interventions=[Intervention(F_GATE, None, "patch", value)]):
        target(model(ids)).sum().backward()
    assert torch.allclose(gxa, value.grad * value.detach(), atol=1e-6)


@pytest.mark.parametrize("which", list(MODELS))
def test_conductance_and_neuron_integrated_gradients_are_complete(which):
    from captum.attr import LayerConductance, NeuronIntegratedGradients

    model, ids, target = captum_setup(which)
    lm = FromEmbeddings(model).eval()
    hooked = hook_points(lm, per="sequence")
    embedded = model.embedding(ids).detach()  # (B, T, E)
    baseline = torch.zeros_like(embedded)
    with torch.no_grad():
        difference = target(lm(embedded)) - target(lm(baseline))
    # the last layer's h at every step is a cut between input and output: conductance is complete on it
    lc = LayerConductance(lambda e: target(hooked(e)), hooked.points["lm.rnn.l0.fwd.h"])
    attr = lc.attribute(embedded, baselines=baseline, n_steps=64)
    assert torch.allclose(attr.sum((1, 2)), difference, atol=1e-2 * difference.abs().max().item())
    # and it runs on a gate, which is not a cut (the input reaches the output past it)
    on_gate = LayerConductance(lambda e: target(hooked(e)), hooked.points["lm.rnn.l0.fwd.f"])
    assert torch.isfinite(on_gate.attribute(embedded, baselines=baseline, n_steps=8)).all()
    nig = NeuronIntegratedGradients(lambda e: target(hooked(e)), hooked.points["lm.rnn.l0.fwd.f"])
    attr = nig.attribute(embedded, neuron_selector=(2, 5), baselines=baseline, n_steps=64)
    gate = "lm.rnn.l0.fwd.f"
    neuron = [run_with_cache(lm, x, names=gate)[1].padded(gate)[:, 2, 5] for x in (embedded, baseline)]
    assert attr.shape == embedded.shape
    assert torch.allclose(attr.sum((1, 2)), neuron[0] - neuron[1], atol=1e-4)


@pytest.mark.parametrize("which", list(MODELS))
def test_the_recurrent_module_as_a_captum_layer_through_its_out_point(which):
    from captum.attr import LayerIntegratedGradients

    model, ids, target = captum_setup(which)
    hooked = hook_points(model, per="sequence")
    baseline = torch.zeros_like(ids)
    lig = LayerIntegratedGradients(lambda x: target(hooked(x)), hooked.get_submodule("hooks.rnn.out"))
    attr, delta = lig.attribute(ids, baselines=baseline, n_steps=32, return_convergence_delta=True)
    with torch.no_grad():
        difference = target(model(ids)) - target(model(baseline))
    assert torch.allclose(attr.sum((1, 2)), difference, atol=1e-4) and delta.abs().max() < 1e-4


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_captum_on_a_gate_on_cuda_in_eval_mode():
    from captum.attr import LayerIntegratedGradients

    model, ids, target = captum_setup("stock")
    model, ids = model.cuda(), ids.cuda()
    hooked = hook_points(model, per="sequence")
    lig = LayerIntegratedGradients(lambda x: target(hooked(x)), hooked.points[F_GATE])
    attr = lig.attribute(ids, baselines=torch.zeros_like(ids), n_steps=16)
    assert attr.is_cuda and torch.isfinite(attr).all() and not model.training


# -- nnsight and pyvene (the `interop` extra) -----------------------------------------------------------
# Their hooks force the step loop; the same edit through record() runs oneDNN's fused kernel on the steps
# it leaves alone: the same values to float32 rounding (1.4e-6 and 2e-6 measured on logits of size 3-4)
ACROSS_ROUTES = {"atol": 1e-5, "rtol": 0}


def test_nnsight_reads_and_sets_a_gate_through_its_point():
    nnsight = pytest.importorskip("nnsight", reason="nnsight is not installed (pip install 'gatescope[interop]')")
    model, ids = agreement()
    traced = nnsight.NNsight(hook_points(model, per="sequence"))
    with torch.no_grad(), traced.trace(ids):
        gate = traced.hooks.rnn.l0.fwd.f.output.clone().save()
        traced.hooks.rnn.l0.fwd.f.output[:, 2:, 7] = 0.0
        out = traced.output.save()
    _, trace = run_with_cache(model, ids, names=F_GATE)
    assert torch.equal(gate, trace.padded(F_GATE))
    want = edited(model, ids, Intervention(F_GATE, [7], "set", 0.0, steps=slice(2, None)))
    assert (out - edited(model, ids)).abs().max() > 1e-3
    assert torch.allclose(out, want, **ACROSS_ROUTES)




def pyvene_model(pv, kind):
    from pyvene.models.intervenable_modelcard import type_to_dimension_mapping

    model, ids = agreement()
    hooked = hook_points(model, names=F_GATE, per="sequence")
    hooked.config, hooked.device = None, ids.device  # what pyvene reads of a Hugging Face model
    type_to_dimension_mapping.setdefault(type(hooked), {})  # a model type pyvene has no card for
    config = pv.IntervenableConfig(
        representations=[pv.RepresentationConfig(component=f"hooks.{F_GATE}.output", unit="pos",
                                                 max_number_of_units=2)],
        intervention_types=kind)
    return model, ids, pv.IntervenableModel(config, hooked)


def test_pyvene_zero_and_interchange_on_a_gate_match_intervention():
    pv = pytest.importorskip("pyvene", reason="pyvene is not installed (pip install 'gatescope[interop]')")
    model, ids, zero = pyvene_model(pv, pv.ZeroIntervention)
    positions = [[[1, 3]] * ids.shape[0]]
    _, out = zero(base={"ids": ids}, unit_locations={"base": positions})
    want = edited(model, ids, Intervention(F_GATE, None, "set", 0.0, steps=[1, 3]))
    assert (out - edited(model, ids)).abs().max() > 1e-3
    assert torch.allclose(out, want, **ACROSS_ROUTES)

    _, _, swap = pyvene_model(pv, pv.VanillaIntervention)
    other = torch.randint(1, 96, ids.shape)
    _, out = swap(base={"ids": ids}, sources=[{"ids": other}], unit_locations={"sources->base": (positions, positions)})
    _, counterfactual = run_with_cache(model, other, names=F_GATE)
    want = edited(model, ids, Intervention(F_GATE, None, "patch", counterfactual.padded(F_GATE), steps=[1, 3]))
    assert (out - edited(model, ids)).abs().max() > 1e-3
    assert torch.allclose(out, want, **ACROSS_ROUTES)
