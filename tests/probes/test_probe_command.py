"""``python -m mdu_jax.evaluate --probes ...`` end to end: a model that memorised four facts (the
"before unlearning" model) against its untrained twin (a perfect unlearner: it never saw them),
through the real CLI; bad inputs fail with a named problem and write nothing; a demo output
folder resolves to its models, data and settings."""

import dataclasses
import json
import os

import numpy as np
import pytest

from mdu_jax import evaluate
from mdu_jax.checkpoints import export_params, load_pretrained
from mdu_jax.demo.model import write_demo_model
from mdu_jax.demo.tokenizer import build_tokenizer
from mdu_jax.eval import scoring as S
from mdu_jax.eval.probes import leakage
from mdu_jax.eval.probes.knowledge import SamplerSettings
from mdu_jax.eval.probes.table import probe_rows
from mdu_jax.experiments.probe_targets import from_demo_dir
from mdu_jax.experiments.probes import ProbeSettings, generation_probe
from mdu_jax.experiments.relearn import finetune
from mdu_jax.training.config import OptimSection

PEOPLE = [("Ada Brook", "Paris"), ("Tom Reed", "Lagos"), ("Eve Stone", "Tokyo"), ("Max Wood", "Lima"),
          ("Ian Moss", "Oslo"), ("Zoe Hart", "Cairo")]


def _row(name, town):
    return {"question": f"Where was {name} born?", "answer": f"The author was born in {town}.", "fact": town,
            "paraphrased_answer": f"The birthplace of the author is {town}.",
            "perturbed_answer": ["The author was born in Rome."]}


FORGET = [_row(*p) for p in PEOPLE[:4]]
RETAIN = [_row(*p) for p in PEOPLE[4:]]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(data folder, untrained model folder, memorised model folder): the memorised model is the
    untrained one (D=64, 2 layers, model seed 1) after 150 uniform-weight SFT steps on every row
    at 3e-3. Measured on the four forget rows with model seeds 0, 1, 2: greedy fact recall 0.5,
    1.0, 1.0 and best-of-4 sampled fact hits 0.5, 1.0, 1.0 (seed 0's model mixes up people), the
    untrained twin 0 greedy. Seed 1 is used, and the bounds below hold for all three seeds."""
    root = tmp_path_factory.mktemp("probes")
    texts = [t for r in FORGET + RETAIN for t in (r["question"], r["answer"], r["paraphrased_answer"],
                                                   *r["perturbed_answer"])]
    build_tokenizer(texts, root / "tok", "llada", vocab_size=256)
    write_demo_model(root / "untrained", root / "tok", hidden_size=64, num_layers=2, num_heads=2,
                     intermediate_size=128, seed=1)
    cfg, params, tok = load_pretrained(str(root / "untrained"))
    pairs = [S.response_ids(tok, r["question"], r["answer"]) for r in FORGET + RETAIN]
    optim = OptimSection(lr=3e-3, schedule="constant", warmup_ratio=0.0, max_update_ratio=0.0)
    trained, losses = finetune(cfg, params, pairs, steps=150, optim=optim, batch_size=6, loss_weight="uniform")
    assert losses[-1] < 0.01 * losses[0], losses[::30]
    export_params(cfg, trained, root / "memorised", like=root / "untrained", progress=False)
    data = root / "data"
    data.mkdir()
    (data / "forget_perturbed.json").write_text(json.dumps(FORGET))
    (data / "retain_perturbed.json").write_text(json.dumps(RETAIN))
    return data, root / "untrained", root / "memorised"


SMALL = ["--gen-length", "8", "--steps", "8", "--mc-samples", "4", "--leak-samples", "4", "--relearn-steps", "0,2",
         "--relearn-lr", "1e-3", "--reveal-ratios", "0.5,0.9", "--no-progress"]


def _args(world, out, *extra):
    data, untrained, memorised = world
    return ["--probes", "all", "--model", str(untrained), "--before", str(memorised), "--data-dir", str(data),
            "--forget-split", "forget", "--output", str(out), *SMALL, *extra]


def test_the_memorised_model_leaks_in_every_probe_and_its_untrained_twin_does_not(world, tmp_path, capsys):
    out = tmp_path / "probes.json"
    assert evaluate.main(_args(world, out)) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert list(result["models"]) == ["unlearned", "before"]
    assert result["rows"] == {"forget": 4, "retain": 2}
    q = result["probes"]["quantization"]
    # The twin never saw a town with its person: recall 0; the memorised model states most.
    recall = q["before"]["float"]["forget"]["fact_recall"]
    # Greedy answers of the untrained twin can hit a one-token town only by chance (at most one of
    # the four rows; measured 0 with model seeds 0, 1, 2).
    assert recall >= 0.5 and q["unlearned"]["float"]["forget"]["fact_recall"] <= 0.25
    # int8 moves each weight by at most step/2 = max|w|/254: the memorised answers survive it.
    assert q["before"]["int8"]["forget"]["fact_recall"] == recall
    assert q["before"]["float"]["forget"]["prob"] > 5 * q["unlearned"]["float"]["forget"]["prob"]
    r = result["probes"]["relearn"]
    for model in ("unlearned", "before"):
        # Zero relearning steps leave the weights as they were: the same numbers exactly.
        zero = r[model]["steps"]["0"]
        assert zero["held_out"] == r[model]["before"] and zero["final_loss"] is None
        assert r[model]["train_rows"] == 2 and r[model]["held_out_rows"] == 2
    f = result["probes"]["infilling"]
    assert f["before"]["random"]["ratios"] == [0.5, 0.9]
    # Answers of 7 tokens: r = 0.9 shows 6 and hides one; chance is about 1 / vocabulary.
    assert f["before"]["random"]["token_accuracy"][1] >= 0.75
    assert f["unlearned"]["random"]["token_accuracy"][1] <= 0.25
    g = result["probes"]["generation"]
    assert g["before"]["score"] == "fact_hit" and g["before"]["samples"] == 4
    # Sampling at T = 1 from the untrained twin's near-uniform logits draws 4 x 8 tokens from 256:
    # a given one-token town turns up with probability about 1 - (255/256)^32 = 0.12 per row, so
    # best-of-4 over 4 rows is 0.25 now and then (model seed 2 here: 0.25; seeds 0, 1: 0) and
    # above 0.5 with probability under 1%.
    assert g["before"]["algorithms"]["low_confidence"]["best_of_k"] >= 0.5
    assert g["unlearned"]["algorithms"]["low_confidence"]["best_of_k"] <= 0.5
    # The table names every probe and both models, and the JSON keeps it.
    for text in ("forget, int4 weights: fact_recall", "after 2 relearning steps", "infilling r=0.9 (random)",
                 "best-of-4 fact hit", "unlearned", "before"):
        assert text in printed
    assert result["table"] in printed
    # The curves beside the JSON, as PNGs (infilling: recovery vs r; relearning: vs steps).
    assert result["plots"] == {"infilling": str(tmp_path / "probes_infilling.png"),
                               "relearn": str(tmp_path / "probes_relearn.png")}
    for path in result["plots"].values():
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def _fails(argv, capsys, out, message):
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not os.path.exists(out)
    assert not [p for p in os.listdir(os.path.dirname(out)) if p.startswith(".tmp") or p.endswith(".png")]


@pytest.mark.parametrize("extra, message", [
    (["--probes", "quantisation"], "probes: expected some of"),
    (["--reveal-ratios", "0.5,1.0"], "ratios: expected reveal ratios in [0, 1)"),
    (["--reveal-ratios", "half"], "--reveal-ratios: expected comma-separated numbers"),
    (["--relearn-steps", "-1"], "relearn_steps: expected step counts >= 0"),
    (["--quant-bits", "int3"], "bits: expected some of"),
    (["--leak-temperature", "0"], "leak_temperature: expected > 0"),
    (["--forget-split", "forget99"], "no split 'forget99_perturbed'"),
    (["--benchmark", "rwku"], "--benchmark rwku: the probes read the --subject's RWKU forget probes; leave out"),
    (["--demo-run", "mdu_tau1"], "--demo-run is a --demo-dir option"),
])
def test_bad_probe_flags_are_named_and_nothing_is_written(world, tmp_path, capsys, extra, message):
    out = tmp_path / "probes.json"
    _fails(_args(world, out, *extra), capsys, str(out), message)


def test_a_missing_checkpoint_or_an_output_folder_is_refused(world, tmp_path, capsys):
    out = tmp_path / "probes.json"
    _fails(_args(world, out, "--baseline", str(tmp_path / "nowhere")), capsys, str(out), "no such checkpoint folder")
    data, untrained, _ = world
    _fails(["--probes", "infilling", "--data-dir", str(data), "--forget-split", "forget", "--output", str(out)],
           capsys, str(out), "--probes needs --model")
    (tmp_path / "folder").mkdir()
    assert evaluate.main(_args(world, tmp_path / "folder")) == 2
    assert "is a folder" in capsys.readouterr().err and not os.listdir(tmp_path / "folder")


def _demo_folder(root, world, moved_from):
    """A demo output folder in the layout ``demo.pipeline`` writes (models linked in), whose
    summary.json was written at `moved_from` before the folder moved to `root`."""
    data, untrained, memorised = world
    links = {"assets/data": data, "cache/sft-abc/final": memorised, "cache/sft_retain-def/final": untrained,
             "mdu_tau1/final": untrained}
    for rel, target in links.items():
        os.makedirs(os.path.dirname(root / rel), exist_ok=True)
        os.symlink(target, root / rel)
    (root / "mdu_tau1" / "eval.json").write_text(json.dumps({"settings": {
        "gen_length": 8, "steps": 8, "block_length": 8, "algorithm": "low_confidence", "mc_samples": 16}}))
    (data / "world.json").write_text(json.dumps({"split_names": {"forget": "forget", "retain": "retain"}}))
    models = {"sft": f"{moved_from}/cache/sft-abc/final", "retain_twin": f"{moved_from}/cache/sft_retain-def/final",
              "mdu_tau1": f"{moved_from}/mdu_tau1/final"}
    (root / "summary.json").write_text(json.dumps({"output_dir": moved_from, "models": models,
                                                   "stages": {"sft": {"lr": 3e-3}, "unlearn": {"lr": 5e-4}}}))


def test_a_demo_folder_gives_the_unlearned_run_the_twin_and_the_sft_model(world, tmp_path, capsys):
    demo = tmp_path / "demo"
    demo.mkdir()
    _demo_folder(demo, world, "/elsewhere/runs/demo")
    targets = from_demo_dir(str(demo))
    assert list(targets.models) == ["mdu_tau1", "retain-only twin", "before (SFT)"]
    assert targets.models["before (SFT)"] == str(demo / "cache" / "sft-abc" / "final")
    assert targets.forget_split == "forget" and targets.relearn_lr == 5e-4
    assert targets.sampler == {"gen_length": 8, "steps": 8, "block_length": 8, "algorithm": "low_confidence"}
    with pytest.raises(ValueError, match="--demo-run 'npo': not a run of"):
        from_demo_dir(str(demo), unlearned="npo")
    # Through the CLI: the infilling probe only, written into the demo folder by default.
    assert evaluate.main(["--probes", "infilling", "--demo-dir", str(demo), "--reveal-ratios", "0.9",
                          "--no-progress"]) == 0
    result = json.loads((demo / "probes.json").read_text())
    acc = {m: v["random"]["token_accuracy"][0] for m, v in result["probes"]["infilling"].items()}
    assert acc["before (SFT)"] >= 0.75 and acc["mdu_tau1"] == acc["retain-only twin"] <= 0.25
    assert result["settings"]["sampler"]["gen_length"] == 8
    assert np.isclose(result["settings"]["relearn_lr"], 5e-4)
    # Only the probes that ran draw their curve.
    assert list(result["plots"]) == ["infilling"] and not (demo / "probes_relearn.png").exists()
    assert (demo / "probes_infilling.png").stat().st_size > 1000


def test_a_folder_that_is_not_a_demo_output_is_named(tmp_path, capsys):
    out = tmp_path / "probes.json"
    _fails(["--probes", "all", "--demo-dir", str(tmp_path), "--output", str(out)], capsys, str(out),
           "summary.json: no such file")


def test_paraphrased_questions_are_sampled_as_their_own_rows(world):
    """The generation probe asks the rows' ``paraphrased_question`` and scores the row's own fact:
    here each of three rows is "paraphrased" as the next row's question (words the tokenizer
    knows), so the memorised model answers with the next person's town and hits its own row's
    fact far less often than with the original questions; the fourth row has no paraphrase."""
    _, _, memorised = world
    cfg, params, tok = load_pretrained(str(memorised))
    rows = [dict(r, paraphrased_question=FORGET[i + 1]["question"]) for i, r in enumerate(FORGET[:3])] + [FORGET[3]]
    s = ProbeSettings(probes=("generation",), leak_samples=4, sampler=SamplerSettings(gen_length=8, steps=8))
    out = generation_probe(cfg, params, tok, rows, s)
    para = out["paraphrased"]
    asked = [dict(r, question=FORGET[i + 1]["question"]) for i, r in enumerate(FORGET[:3])]
    # Exactly the probe of the three rows asked in their paraphrased form (same seed, same sampler).
    assert para == {"rows": 3, **leakage.generation_leakage(cfg, params, tok, asked, s.sampler, samples=4)}
    alg = para["algorithms"]["low_confidence"]
    assert out["algorithms"]["low_confidence"]["mean"] >= 0.5 and alg["mean"] <= 0.25, out
    # The table shows the paraphrased rows as rows of their own.
    labels = [label for label, _ in probe_rows({"probes": {"generation": {"m": out}}})]
    assert "paraphrased questions (3 rows), sampled x4 (low_confidence): best-of-4 fact hit" in labels
    # A paraphrase equal to the question gives the original numbers; no paraphrases or the
    # setting off: no paraphrased rows.
    same = generation_probe(cfg, params, tok, [dict(r, paraphrased_question=r["question"]) for r in FORGET[:2]], s)
    assert same["paraphrased"]["algorithms"] == same["algorithms"]
    assert "paraphrased" not in generation_probe(cfg, params, tok, rows, dataclasses.replace(s, leak_paraphrased=False))
    assert leakage.paraphrased_rows(FORGET) == [] and leakage.paraphrased_rows(rows)[0]["fact"] == FORGET[0]["fact"]


def test_a_labelled_baseline_joins_a_demo_folders_models(world, tmp_path, capsys):
    """``--baseline npo=PATH`` beside ``--demo-dir``: a column named npo between the demo's
    unlearned run and its references, scored like the others (the memorised model here)."""
    demo = tmp_path / "demo"
    demo.mkdir()
    _demo_folder(demo, world, "/elsewhere/runs/demo")
    _, untrained, memorised = world
    other = tmp_path / "other_method"
    os.symlink(memorised, other)
    assert evaluate.main(["--probes", "infilling", "--demo-dir", str(demo), "--reveal-ratios", "0.9",
                          "--baseline", f"npo={other}", "--no-progress"]) == 0
    result = json.loads((demo / "probes.json").read_text())
    infilling = result["probes"]["infilling"]
    assert list(infilling) == ["mdu_tau1", "npo", "retain-only twin", "before (SFT)"]
    acc = {m: v["random"]["token_accuracy"][0] for m, v in infilling.items()}
    assert acc["npo"] == acc["before (SFT)"] >= 0.75 and acc["mdu_tau1"] <= 0.25
    capsys.readouterr()
    # A label already taken by the demo, the demo's own SFT model again, and --before are refused.
    for extra, message in [(["--baseline", f"mdu_tau1={other}"], "name a model of --demo-dir already"),
                           (["--baseline", f"again={demo / 'cache' / 'sft-abc' / 'final'}"], "named twice"),
                           (["--before", str(memorised)], "leave out --model / --before"),
                           (["--baseline", "=x"], "expected PATH or LABEL=PATH")]:
        out = tmp_path / "refused.json"
        _fails(["--probes", "infilling", "--demo-dir", str(demo), "--output", str(out), *extra], capsys, str(out),
               message)
