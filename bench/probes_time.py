"""Time of the leakage probes (issue 18) at full size: a roofline lower bound from compiled programs.

    python -m bench.probes_time                          # LLaDA-8B, TOFU forget10, the CLI's defaults (~2 min)
    python -m bench.probes_time --leak-samples 16        # other probe settings (the --probes flags)

For each program the probes run (the ones ``bench.probes_memory`` sizes), XLA's
``cost_analysis()`` of the compiled program gives its flops and bytes accessed per device; on an
accelerator (``ACCELERATORS``) one call takes at least

    max(flops / peak bf16 dense flop/s, bytes accessed / HBM bandwidth)        (the roofline)

and a probe at least the sum over its programs of that times how many calls it makes
(``invocations``: the call counts of ``experiments.probes.run_probes`` on TOFU forget10's 400
forget and 400 retain_perturbed rows, for one model; a run probes three: unlearned, retain-only,
before). It is a lower bound: real programs reach well below peak (nothing here measured an
efficiency, so none is assumed), the host work between calls (tokenising, scoring, the sampler's
between-block checks) and compilation are left out, and collectives of the FSDP row are not
counted. Three things the counts do assume, each an over-count rather than an under-count:
every evaluation row is padded to the bench's [rows, seq] (TOFU's chat-templated pairs are
shorter), every generation runs all its sampler steps (``stop_early`` skips the blocks after
every row of a batch has stopped), and batches are full (length splits add a few calls).

How the costs are read. XLA's cost analysis counts the body of a loop once, whatever its trip
count (checked in tests/probes/test_probe_time.py): the sampler's ``fori_loop`` over denoising
steps therefore gives the cost of one step (its calls are counted in steps), but the models'
``lax.scan`` over layers would give one layer, and the CPU's chunked attention and the loss's
sequence chunks one chunk. So the costs are compiled without those loops (``scan_layers`` off,
'xla' attention, the relearning loss in one chunk: the same arithmetic) at 1 and 2 layers and
extrapolated linearly to the model's layer count (every layer is the same program), which also
keeps the compiles small. Compiled for CPU with bf16 as float16 (``training.memory.cpu_proxy``):
the flops are the program's; the bytes are the CPU's fusion of it, a proxy for a GPU's or TPU's.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from typing import Sequence

import bench.probes_memory as pm  # first: it sets JAX_PLATFORMS and the fake CPU devices before jax loads
import jax  # noqa: E402

from mdu_jax.eval.probes.knowledge import SamplerSettings  # noqa: E402
from mdu_jax.eval.tofu import sampler_settings  # noqa: E402
from mdu_jax.experiments.probes import ProbeSettings, relearn_split  # noqa: E402
from mdu_jax.models.params import abstract_params  # noqa: E402
from mdu_jax.sampling import make_spec  # noqa: E402
from mdu_jax.training import memory  # noqa: E402

# Peak dense bf16 matmul rate (flop/s, no sparsity) and HBM bandwidth (bytes/s) per chip, from the
# vendors' spec sheets: NVIDIA H100 SXM5 and H200 SXM datasheets, Google Cloud TPU v5p system page.
ACCELERATORS = (
    ("H100 SXM", 989e12, 3.35e12, "NVIDIA H100 datasheet: 989 TFLOP/s bf16 dense, 3.35 TB/s HBM3"),
    ("H200", 989e12, 4.8e12, "NVIDIA H200 datasheet: 989 TFLOP/s bf16 dense, 4.8 TB/s HBM3e"),
    ("TPU v5p", 459e12, 2.765e12, "Google Cloud TPU v5p: 459 TFLOP/s bf16, 2,765 GB/s HBM2e"),
)
TOFU_FORGET10_ROWS = 400   # forget10_perturbed.json
TOFU_RETAIN_ROWS = 400     # retain_perturbed.json (the quantisation probe's utility check)
ROWS_PER_FORWARD = 32      # likelihood rows per compiled forward (scoring.answer_avg_nll's default)
LIKELIHOOD_CHUNK = 64      # pairs per answer_avg_nll chunk (each chunk pads its last forward)
PROGRAMS = ("sampler step", "likelihood", "infilling forward", "quantise", "relearn step")


@dataclasses.dataclass(frozen=True)
class Cost:
    """One call of a compiled program, per device: flops and bytes accessed (XLA's cost analysis)."""

    flops: float
    bytes: float


def roofline_s(cost: Cost, peak_flops: float, bandwidth: float) -> float:
    """Seconds one call takes at least on a chip of `peak_flops` flop/s and `bandwidth` bytes/s:
    max(compute bound, memory bound)."""
    return max(cost.flops / peak_flops, cost.bytes / bandwidth)


def extrapolate(one: Cost, two: Cost, layers: int) -> Cost:
    """The cost at `layers` layers from the costs at 1 and 2 (every layer adds the same program)."""
    return Cost(one.flops + (layers - 1) * (two.flops - one.flops), one.bytes + (layers - 1) * (two.bytes - one.bytes))


def _cost(compiled) -> Cost:
    c = compiled.cost_analysis()
    c = c[0] if isinstance(c, (list, tuple)) else c
    return Cost(float(c["flops"]), float(c["bytes accessed"]))


def program_costs(rows: int, seq: int, relearn_rows: int, relearn_seq: int, devices: Sequence[int],
                  hf_config: str = pm.HF_CONFIG) -> tuple[dict[str, Cost], int]:
    """({program: Cost per call} at the model's layer count, that count). Programs: the
    ``PROGRAMS`` (sampler step = one denoising step), the relearning step once per mesh size of
    `devices` ('relearn step' on 1 device, 'relearn step, FSDP n' on n)."""
    cfg_train = pm.relearn_train_config(["model.scan_layers=false", "objective.chunk_size=0"])
    full = memory.model_config(cfg_train, os.path.join(pm.ROOT, hf_config))
    per_layers = []
    for n in (1, 2):
        model_cfg = full.replace(num_layers=n)
        run_cfg = model_cfg.replace(attention_impl="xla")  # not the CPU's chunked attention (a loop)
        params = abstract_params(model_cfg)
        costs = {}
        for name, fn, args in pm.eval_programs(model_cfg, run_cfg, params, rows, seq):
            key = {"sampler": "sampler step", "quantise int4": "quantise"}.get(name, name)
            costs[key] = _cost(fn.lower(*args).compile())
        for d in devices:
            m = memory.step_memory(cfg_train, model_cfg, memory.make_cpu_mesh(cfg_train, d), relearn_rows, relearn_seq)
            costs["relearn step" if d == 1 else f"relearn step, FSDP {d}"] = Cost(m.flops, m.bytes_accessed)
        per_layers.append(costs)
        print(f"  costs compiled at {n} layer{'s' if n > 1 else ''}", flush=True)
    return {k: extrapolate(per_layers[0][k], per_layers[1][k], full.num_layers) for k in per_layers[0]}, full.num_layers


def cli_settings(model_cfg) -> ProbeSettings:
    """What ``python -m mdu_jax.evaluate --probes all`` runs with on a checkpoint of `model_cfg`'s
    family: the probe flags' defaults, the open-unlearning profile's sampler."""
    sampler = {k: v for k, v in sampler_settings(model_cfg, "open-unlearning").items()
               if k in SamplerSettings.__dataclass_fields__}
    return ProbeSettings(sampler=SamplerSettings(**sampler))


def _likelihood_forwards(n: int, mc_samples: int) -> int:
    return sum(math.ceil(min(LIKELIHOOD_CHUNK, n - lo) * mc_samples / ROWS_PER_FORWARD)
               for lo in range(0, n, LIKELIHOOD_CHUNK))


def knowledge_calls(n: int, s: ProbeSettings, steps_per_generation: int) -> dict[str, int]:
    """Calls of ``eval.probes.knowledge`` on n rows: greedy answers (batches of ``s.batch_size``,
    every sampler step) and the answer probability (n x mc_samples Monte Carlo rows)."""
    return {"sampler step": math.ceil(n / s.batch_size) * steps_per_generation,
            "likelihood": _likelihood_forwards(n, s.mc_samples)}


def _add(total: dict[str, int], calls: dict[str, int], times: int = 1) -> None:
    for k, v in calls.items():
        total[k] = total.get(k, 0) + v * times


def invocations(s: ProbeSettings, steps_per_generation: int, forget_rows: int = TOFU_FORGET10_ROWS,
                retain_rows: int = TOFU_RETAIN_ROWS,
                paraphrased_rows: int = TOFU_FORGET10_ROWS) -> dict[str, dict[str, int]]:
    """{probe: {program: calls}} that ``run_probes`` makes for ONE model with settings `s` (see the
    module docstring for what is over-counted). `steps_per_generation`: sampler steps of one
    generation (``len(make_spec(...).plan)``). Every width of ``s.bits`` is one call of the
    quantisation program (int8 and int4 differ only in a constant). `paraphrased_rows`: forget
    rows with a paraphrased question (all of forget10's), sampled again with
    ``s.leak_paraphrased``."""
    out: dict[str, dict[str, int]] = {}
    if "quantization" in s.probes:
        q: dict[str, int] = {"quantise": len(s.bits)}
        for _ in ("float",) + tuple(s.bits):
            _add(q, knowledge_calls(forget_rows, s, steps_per_generation))
            if retain_rows:
                _add(q, knowledge_calls(retain_rows, s, steps_per_generation))
        out["quantization"] = q
    if "relearn" in s.probes:
        train, held = relearn_split(range(forget_rows), s)
        r = dict(knowledge_calls(len(held), s, steps_per_generation))   # before
        for k in s.relearn_steps:
            _add(r, {"relearn step": int(k)})
            _add(r, knowledge_calls(len(held), s, steps_per_generation))
            _add(r, knowledge_calls(len(train), s, steps_per_generation))
        out["relearn"] = r
    if "infilling" in s.probes:
        fills = sum(math.ceil(forget_rows * len(s.ratios) / s.batch_size)
                    + (math.ceil(forget_rows / s.batch_size) if order == "least_informative" else 0)
                    for order in s.orders)
        out["infilling"] = {"infilling forward": fills}
    if "generation" in s.probes:
        algorithms = len(s.leak_algorithms) if s.leak_algorithms else 1
        prompts = [forget_rows] + ([paraphrased_rows] if s.leak_paraphrased and paraphrased_rows else [])
        out["generation"] = {"sampler step": algorithms * steps_per_generation
                             * sum(math.ceil(n * s.leak_samples / s.batch_size) for n in prompts)}
    return out


def probe_seconds(calls: dict[str, int], costs: dict[str, Cost], peak_flops: float, bandwidth: float,
                  relearn_program: str = "relearn step") -> float:
    """Roofline lower bound (s) of one probe's `calls` on a chip; relearning steps use the cost of
    `relearn_program` (the 1-device step or an FSDP row)."""
    return sum(n * roofline_s(costs[relearn_program if p == "relearn step" else p], peak_flops, bandwidth)
               for p, n in calls.items())


def _fmt_s(x: float) -> str:
    return f"{x:.3g}" if x < 1 else f"{x:,.0f}"


def print_tables(costs: dict[str, Cost], calls: dict[str, dict[str, int]], models: int, out=sys.stdout) -> None:
    """The per-program cost table and the per-probe time table (one model, then `models` models)."""
    names = [a[0] for a in ACCELERATORS]
    print("per call (per device)", file=out)
    print(f"{'program':<26}{'TFLOP':>9}{'GB accessed':>13}" + "".join(f"{n + ' ms':>14}" for n in names), file=out)
    for p, c in costs.items():
        print(f"{p:<26}{c.flops / 1e12:>9.2f}{c.bytes / 1e9:>13.2f}"
              + "".join(f"{roofline_s(c, pk, bw) * 1e3:>14.2f}" for _, pk, bw, _ in ACCELERATORS), file=out)
    print("\nper probe, one model (roofline lower bound, seconds)", file=out)
    print(f"{'probe':<14}{'calls':<54}{'PFLOP':>8}" + "".join(f"{n + ' s':>12}" for n in names), file=out)
    totals = [0.0] * len(ACCELERATORS)
    for probe, c in calls.items():
        flops = sum(n * costs[p].flops for p, n in c.items())
        secs = [probe_seconds(c, costs, pk, bw) for _, pk, bw, _ in ACCELERATORS]
        totals = [t + x for t, x in zip(totals, secs)]
        listing = ", ".join(f"{n} {p}" for p, n in c.items())
        print(f"{probe:<14}{listing:<54}{flops / 1e15:>8.0f}" + "".join(f"{_fmt_s(x):>12}" for x in secs), file=out)
    flops = sum(n * costs[p].flops for c in calls.values() for p, n in c.items())
    print(f"{'all, 1 model':<68}{flops / 1e15:>8.0f}" + "".join(f"{_fmt_s(x):>12}" for x in totals), file=out)
    print(f"{f'all, {models} models':<76}" + "".join(f"{_fmt_s(x * models):>12}" for x in totals), file=out)
    # The compute bound alone does not depend on how XLA:CPU fused the program (the bytes do).
    print(f"{'all, 1 model, flops / peak only':<76}"
          + "".join(f"{_fmt_s(flops / pk):>12}" for _, pk, _, _ in ACCELERATORS), file=out)
    fsdp = [k for k in costs if k.startswith("relearn step, FSDP")]
    for k in fsdp:
        steps = calls.get("relearn", {}).get("relearn step", 0)
        print(f"\nrelearning's {steps} SFT steps on one chip: "
              + ", ".join(f"{n} {_fmt_s(steps * roofline_s(costs['relearn step'], pk, bw))} s"
                          for n, pk, bw, _ in ACCELERATORS)
              + f"; sharded ({k}, per chip, collectives not counted): "
              + ", ".join(f"{n} {_fmt_s(steps * roofline_s(costs[k], pk, bw))} s" for n, pk, bw, _ in ACCELERATORS),
              file=out)
    print("\npeaks: " + "; ".join(a[3] for a in ACCELERATORS), file=out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    pm.add_shape_args(p)
    p.add_argument("--leak-samples", type=int, help="override the probes' --leak-samples")
    p.add_argument("--models", type=int, default=3, help="models probed (unlearned, retain-only, before)")
    a = p.parse_args(argv)
    if 1 not in a.devices:
        p.error("--devices must include 1 (relearning runs on one device)")
    model_cfg = memory.model_config(pm.relearn_train_config(), os.path.join(pm.ROOT, pm.HF_CONFIG))
    s = cli_settings(model_cfg)
    s = dataclasses.replace(s, batch_size=a.rows, relearn_batch_size=a.relearn_rows,
                            leak_samples=a.leak_samples or s.leak_samples)
    steps = len(make_spec(model_cfg, **s.sampler.as_kwargs()).plan)
    print(f"backend: {jax.default_backend()}; LLaDA-8B ({pm.CONFIG}, bf16 compiled as f16 on CPU); TOFU forget10 "
          f"({TOFU_FORGET10_ROWS} forget, {TOFU_RETAIN_ROWS} retain rows); {steps} sampler steps per generation",
          flush=True)
    costs, layers = program_costs(a.rows, a.seq, a.relearn_rows, a.relearn_seq, a.devices)
    print(f"\n{layers} layers; evaluation programs {a.rows}x{a.seq}, relearning step {a.relearn_rows}x{a.relearn_seq}\n")
    print_tables(costs, invocations(s, steps), a.models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
