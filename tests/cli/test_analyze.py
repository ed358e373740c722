"""`gatescope analyze ...`: the public JSON contracts, human output, files, and one-line errors."""
import json

import numpy as np
import pytest
import torch

from gatescope import sample_models
from gatescope.cli import main
from gatescope.traces.trace import Trace

N, LEN, H = 400, 10, 6


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(N, generator=g) > 0.5).float()
    h = torch.randn(N, H, generator=g)
    h[:, 2] = 3 * y + 0.3 * torch.randn(N, generator=g)
    f = torch.rand(N, H, generator=g)
    f[100:104, [1, 3]] = 0.95
    f[300:304, [1, 3]] = 0.95
    tensors = {"rnn.l0.fwd.i": torch.rand(N, H, generator=g), "rnn.l0.fwd.f": f,
               "rnn.l0.fwd.g": torch.rand(N, H) * 2 - 1,
               "rnn.l0.fwd.o": torch.rand(N, H), "rnn.l0.fwd.c": torch.randn(N, H), "rnn.l0.fwd.h": h}
    ids = torch.randint(0, 5, (N,), generator=g)
    trace = Trace(tensors, torch.arange(0, N + 1, LEN), token_ids=ids, features={"label": y.numpy()},
                  meta={"vocab": ["a", "b", "c", "d", "e"], "tokenizer": "word"})
    folder = tmp_path_factory.mktemp("cli")
    trace.save(folder / "t.safetensors")
    np.save(folder / "labels.npy", y.numpy())
    (folder / "labels.txt").write_text("\n".join(str(int(v)) for v in y.tolist()) + "\n")
    (folder / "short.txt").write_text("1\n0\n")
    return folder


def run(args, capsys):
    main(args)
    return capsys.readouterr()


def fails(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("gatescope: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_units_json_contract(trace_file, capsys):
    t = str(trace_file / "t.safetensors")
    out = json.loads(run(["analyze", "units", t, "--feature", "label", "--top", "3", "--permutations", "50",
                          "--json"], capsys).out)
    assert len(out) == 3 and out[0]["unit"] == "rnn.l0.fwd.h:2" and out[0]["metric"] == "auc"
    assert isinstance(out[0]["score"], float) and out[0]["score"] >= out[1]["score"] >= out[2]["score"]
    assert {"unit", "score", "metric", "p_value", "p_fwer"} <= set(out[0])
    for labels in ("labels.npy", "labels.txt"):
        again = json.loads(run(["analyze", "units", t, "--labels", str(trace_file / labels), "--kinds", "h,c",
                                "--metric", "corr", "--top", "1", "--permutations", "0", "--json"], capsys).out)
        assert again[0]["unit"] == "rnn.l0.fwd.h:2" and again[0]["metric"] == "corr"
    human = run(["analyze", "units", t, "--feature", "label", "--top", "2", "--permutations", "10",
                 "--csv", str(trace_file / "all.csv")], capsys)
    assert "rnn.l0.fwd.h:2" in human.out
    assert len((trace_file / "all.csv").read_text().splitlines()) == 6 * H + 1


def test_units_errors(trace_file, capsys):
    t = str(trace_file / "t.safetensors")
    assert "has 2 values but the trace has 400 tokens" in fails(
        ["analyze", "units", t, "--labels", str(trace_file / "short.txt")], capsys)
    assert "exactly one of --feature" in fails(["analyze", "units", t], capsys)
    assert "no quantity of kind z" in fails(["analyze", "units", t, "--feature", "label", "--kinds", "z"], capsys)
    assert "no such file" in fails(["analyze", "units", str(trace_file / "none.safetensors"), "--feature", "x"],
                                   capsys)
    assert "no feature 'x'" in fails(["analyze", "units", t, "--feature", "x"], capsys)
    missing = trace_file / "no" / "r.csv"
    assert "does not exist" in fails(["analyze", "units", t, "--feature", "label", "--csv", str(missing)], capsys)


def test_an_output_that_names_an_input_is_refused_before_the_work(trace_file, capsys, tmp_path):
    """--csv and -o overwrote whatever they named, the trace or the labels included; as `trace -o` does,
    every output that names one of the command's inputs is refused, and the input is left as it was."""
    t = str(trace_file / "t.safetensors")
    labels = trace_file / "labels.txt"
    before = (trace_file / "t.safetensors").read_bytes(), labels.read_bytes()
    assert "the output " + t + " is the TRACE file; choose another path" in fails(
        ["analyze", "units", t, "--feature", "label", "--permutations", "0", "--csv", t], capsys)
    assert "is the --labels file" in fails(
        ["analyze", "units", t, "--labels", str(labels), "--permutations", "0", "--csv", str(labels)], capsys)
    assert "is the TRACE file" in fails(["analyze", "profile", t, "--unit", "rnn.l0.fwd.h:2", "-o", t], capsys)
    (tmp_path / "link.csv").symlink_to(labels)  # through a link, too
    assert "is the --labels file" in fails(
        ["analyze", "units", t, "--labels", str(labels), "--csv", str(tmp_path / "link.csv")], capsys)
    assert ((trace_file / "t.safetensors").read_bytes(), labels.read_bytes()) == before
    model = str(sample_models.path("agreement_lstm.safetensors"))
    assert "is the model file" in fails(["explain", model, "--text", "the boys", "--unit", "rnn.l0.fwd.c:1",
                                         "--at", "1", "--svg", model], capsys)


def test_probe_saturation_match_profile(trace_file, capsys):
    t = str(trace_file / "t.safetensors")
    probes = json.loads(run(["analyze", "probe", t, "--feature", "label", "--kinds", "h", "--epochs", "3",
                             "--json"], capsys).out)
    assert probes[0]["name"] == "rnn.l0.fwd.h" and probes[0]["top_units"][0] == "rnn.l0.fwd.h:2"
    assert probes[0]["score"] > 0.9 and "selectivity" in probes[0]
    sat = json.loads(run(["analyze", "saturation", t, "--top", "0", "--json"], capsys).out)
    assert {r["kind"] for r in sat["saturation"]} == {"i", "f", "o"} and len(sat["saturation"]) == 3 * H
    assert len(sat["timescales"]) == H
    from gatescope.traces.trace import load_trace

    tr = load_trace(t)
    for row in sat["saturation"]:
        x = tr[row["name"]][:, row["index"]].numpy()
        assert (row["left"], row["right"]) == (pytest.approx((x < 0.1).mean()), pytest.approx((x > 0.9).mean()))
    f = tr["rnn.l0.fwd.f"].double().mean(0).numpy()
    assert [r["mean"] for r in sat["timescales"]] == pytest.approx(f.tolist())
    assert [r["left"] + r["right"] for r in sat["saturation"]] == sorted(
        (r["left"] + r["right"] for r in sat["saturation"]), reverse=True)  # most saturated first
    assert "mean saturation" in run(["analyze", "saturation", t], capsys).out
    found = json.loads(run(["analyze", "match", t, "--name", "rnn.l0.fwd.f", "--start", "100", "--stop", "104",
                            "--threshold", "0.9", "--top", "1", "--json"], capsys).out)
    assert found["selection"]["units"] == [1, 3] and found["matches"][0]["start"] == 300
    rel = json.loads(run(["analyze", "match", t, "--name", "rnn.l0.fwd.f", "--sequence", "10", "--start", "0",
                          "--stop", "4", "--threshold", "0.9", "--top", "1", "--json"], capsys).out)
    assert rel["selection"]["start"] == 100
    out = trace_file / "fig.svg"
    run(["analyze", "profile", t, "--unit", "rnn.l0.fwd.h:2", "--sequences", "0,1", "-o", str(out)], capsys)
    assert b"<svg" in out.read_bytes()[:500]
    assert "crosses a sequence boundary" in fails(
        ["analyze", "match", t, "--name", "rnn.l0.fwd.f", "--start", "8", "--stop", "12"], capsys)
    assert "unknown unit" in fails(["analyze", "profile", t, "--unit", "rnn.l0.fwd.h:99", "-o", str(out)], capsys)
    assert "--units takes unit indices such as 3,17; got '1,x'" in fails(
        ["analyze", "match", t, "--name", "rnn.l0.fwd.f", "--start", "0", "--stop", "2", "--units", "1,x"], capsys)
    assert "--sequences takes sequence numbers" in fails(
        ["analyze", "profile", t, "--unit", "rnn.l0.fwd.h:2", "--sequences", "first", "-o", str(out)], capsys)


def test_ablate_on_the_sample_lstm(tmp_path, capsys):
    model = sample_models.path("agreement_lstm.safetensors")
    if not model.exists():
        pytest.skip("sample model agreement_lstm.safetensors not trained yet")
    from gatescope.inputs.stimuli.agreement import bundled_stimuli_path

    lines = [x for x in bundled_stimuli_path().read_text().splitlines() if "\tnounpp_SP" in x or "\tnounpp_PS" in x]
    stimuli = tmp_path / "s.tsv"
    stimuli.write_text("\n".join(lines[:15] + lines[-15:]) + "\n")
    out = json.loads(run(["analyze", "ablate", str(model), "--stimuli", str(stimuli), "--units",
                          "rnn.l0.fwd.h:1,rnn.l0.fwd.h:2", "--draws", "2", "--json"], capsys).out)
    assert out["set"]["units"] == ["rnn.l0.fwd.h:1", "rnn.l0.fwd.h:2"] and len(out["set"]["random_harms"]) == 2
    assert {r["unit"] for r in out["sweep"]} == {"rnn.l0.fwd.h:1", "rnn.l0.fwd.h:2"}
    import gatescope
    from gatescope.analysis.agreement import ablation_interventions, evaluate_agreement
    from gatescope.inputs.stimuli.agreement import read_stimuli

    lm, items = gatescope.load(model).eval(), read_stimuli(stimuli)
    assert out["baseline"] == pytest.approx(evaluate_agreement(lm, items)["accuracy"])
    held = evaluate_agreement(lm, items, ablation_interventions(lm, out["set"]["units"]))["accuracy"]
    assert out["set"]["value"] == pytest.approx(held) and out["set"]["harm"] == pytest.approx(out["baseline"] - held)
    assert 0 <= out["baseline"] <= 1 and out["greedy"] is None
    alone = run(["analyze", "ablate", str(model), "--stimuli", str(stimuli), "--units", "rnn.l0.fwd.h:1", "--draws", "0",
                 "--no-sweep", "--json"], capsys).out
    strict = json.loads(alone, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert strict["set"]["random_mean"] is None and strict["set"]["random_harms"] == []
    said = run(["analyze", "ablate", str(model), "--stimuli", str(stimuli), "--units", "rnn.l0.fwd.h:1", "--draws", "0",
                "--no-sweep"], capsys).out
    assert "no random sets (--draws 0)" in said and "nan" not in said  # the text, as the JSON's null
    greedy = json.loads(run(["analyze", "ablate", str(model), "--stimuli", str(stimuli), "--no-sweep", "--greedy",
                             "--k", "1", "--json"], capsys).out)
    assert greedy["set"] is None and greedy["sweep"] == [] and greedy["greedy"][0]["size"] == 1
    assert greedy["greedy"][0]["harm"] == pytest.approx(out["baseline"] - greedy["greedy"][0]["value"])
    width = lm.modules_info[0]["hidden_size"]
    assert f"has {width} units" in fails(["analyze", "ablate", str(model), "--stimuli", str(stimuli), "--units",
                                          f"rnn.l0.fwd.h:{width}"], capsys)
    assert "--top-from needs --feature" in fails(["analyze", "ablate", str(model), "--top-from", "x"], capsys)
    assert "no units given" in fails(["analyze", "ablate", str(model), "--stimuli", str(stimuli), "--units", ","],
                                     capsys)
    assert f"more than the model's {width} units" in fails(["analyze", "ablate", str(model), "--stimuli", str(stimuli),
                                                            "--greedy", "--k", str(width + 1)], capsys)
    assert "--value must be zero, mean or a finite number" in fails(["analyze", "ablate", str(model), "--value", "half"],
                                                             capsys)


def test_attribute_on_the_sample_lstm(capsys):
    model = sample_models.path("agreement_lstm.safetensors")
    if not model.exists():
        pytest.skip("sample model agreement_lstm.safetensors not trained yet")
    out = json.loads(run(["analyze", "attribute", str(model), "--text", "the boys near the car", "--correct", "Greet",
                          "--wrong", "greets", "--steps", "32", "--json"], capsys).out)
    assert [t["token"] for t in out["tokens"]] == ["the", "boys", "near", "the", "car"]
    assert abs(out["token_delta"]) < 1e-2 and abs(out["unit_delta"]) < 1e-2  # completeness, 32 steps
    assert out["name"] == "rnn.l0.fwd.h" and len(out["units"]) == 10
    assert "not in the model's vocabulary" in fails(["analyze", "attribute", str(model), "--text", "the boys",
                                                      "--correct", "zzz", "--wrong", "greets"], capsys)
    assert "the model has no quantity rnn.l0.fwd.z; it has: rnn.l0.fwd.i" in fails(
        ["analyze", "attribute", str(model), "--text", "the boys", "--correct", "greet", "--wrong", "greets",
         "--name", "rnn.l0.fwd.z"], capsys)
    assert "is 2 tokens for this model" in fails(["analyze", "attribute", str(model), "--text", "the boys",
                                                  "--correct", "greet", "--wrong", "greets now"], capsys)


@pytest.mark.parametrize("args", [
    ["units", "--feature", "label", "--top", "-2"],
    ["units", "--feature", "label", "--permutations", "-1"],
    ["saturation", "--top", "-1"],
    ["probe", "--feature", "label", "--epochs", "0"],
    ["match", "--name", "rnn.l0.fwd.f", "--start", "100", "--stop", "104", "--top", "0"],
])
def test_negative_counts_are_usage_errors(trace_file, capsys, args):
    with pytest.raises(SystemExit) as exc:
        main(["analyze", args[0], str(trace_file / "t.safetensors"), *args[1:]])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("gatescope: error: Invalid value for '--") and err.count("\n") == 1
    assert err.endswith(f"(see gatescope analyze {args[0]} --help)\n")


def test_decompose_prints_each_tokens_share_of_the_logit_difference(capsys):
    model = "sample_models/agreement_lstm.safetensors"
    args = ["analyze", "decompose", model, "--text", "the boys near the car", "--correct", "greet", "--wrong", "greets"]
    out = json.loads(run([*args, "--json"], capsys).out)
    assert out["tokens"] == ["the", "boys", "near", "the", "car"] and out["parts"][0] == "constants"
    assert out["method"] == "shapley" and out["check"] < 1e-5
    assert abs(sum(out["contributions"]) - out["total"]) < 1e-4
    gcd = json.loads(run([*args, "--method", "gcd", "--json"], capsys).out)
    assert abs(sum(gcd["contributions"]) + gcd["interaction"] - gcd["total"]) < 1e-4
    table = run([*args, "--method", "cd"], capsys).out
    assert "(interaction)" in table and "boys" in table
    assert "--samples is for --method shapley" in fails([*args, "--method", "gcd", "--samples", "4"], capsys)


def test_unit_and_sequence_lists_are_never_counted_from_the_end(trace_file, capsys, tmp_path):
    t = str(trace_file / "t.safetensors")
    assert "--sequences takes sequence numbers 0 or more; got '0,-1'" in fails(
        ["analyze", "profile", t, "--unit", "rnn.l0.fwd.h:2", "--sequences", "0,-1", "-o", str(tmp_path / "p.png")],
        capsys)
    assert not (tmp_path / "p.png").exists()
