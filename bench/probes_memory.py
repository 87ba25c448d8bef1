"""Memory of the leakage probes (issue 18) at full size, from compiled programs (no full-size arrays).

    python -m bench.probes_memory                         # LLaDA-8B, the shipped TOFU config (~10 min, 2 cores)
    python -m bench.probes_memory --rows 8 --seq 512      # other shapes
    python -m bench.probes_memory --layers 2              # a quick look (2 of the 32 layers)

Each program ``python -m mdu_jax.evaluate --probes all`` compiles is lowered on abstract inputs
(``jax.ShapeDtypeStruct``: the real LLaDA-8B architecture from
tests/models/data/llada_8b_instruct_config.json, weights in the dtype of configs/tofu_llada8b.yaml)
and compiled for one device; ``memory_analysis()`` gives XLA's buffer assignment:

  infilling forward     ``eval.probes.infilling._fill_logits`` on [rows, seq]: argmax ids and the
                        log-probability of the given token at every position
  likelihood            ``likelihood.row_scores`` (the answer probability of every knowledge score)
                        on [rows, seq] with seq/2 answer slots
  sampler               ``sampling.denoise`` (greedy answers and sampled leakage): [rows, seq]
                        canvases with 128 generated slots, LLaDA low-confidence remasking
  quantise int4         ``eval.probes.quantization.quantize_params``: the params in, the round trip out
  relearn step          the SFT train step the relearning attack runs (``training.memory.step_memory``
                        with objective.method=sft, no gradient accumulation, AdamW, state donated),
                        on 1 device and on an FSDP mesh of 8

peak = arguments + outputs - donated aliases + temporaries (per device). What a probe holds at
its high-water mark is the program's peak plus the weights the runner keeps alive beside it
(``experiments.probes.run_probes`` holds one model at a time): the original params while the
quantised copy is evaluated or the fine-tuned copy trains; the "probe total" column adds them.
CPU numbers are a proxy for GPU/TPU (the same buffers; fusion and scratch space differ); bf16 is
compiled as float16 on CPU (``training.memory.cpu_proxy``), with the same sizes.
``bench.probes_time`` reads the same programs' cost analysis for a lower bound on their time.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from mdu_jax.eval.probes import infilling, quantization  # noqa: E402
from mdu_jax.experiments.probes import RELEARN_CHUNK, RELEARN_REMAT  # noqa: E402
from mdu_jax.likelihood import row_scores  # noqa: E402
from mdu_jax.models.config import inference_config  # noqa: E402
from mdu_jax.models.params import abstract_params  # noqa: E402
from mdu_jax.sampling import make_spec  # noqa: E402
from mdu_jax.sampling.prompts import build_canvas  # noqa: E402
from mdu_jax.sampling.sampler import denoise  # noqa: E402
from mdu_jax.training import memory  # noqa: E402
from mdu_jax.training.config import load_config  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/tofu_llada8b.yaml"
HF_CONFIG = "tests/models/data/llada_8b_instruct_config.json"
GEN_LENGTH = 128   # the open-unlearning profile's generated slots


@dataclasses.dataclass
class Program:
    name: str
    shape: str
    argument: int
    output: int
    alias: int
    temp: int
    resident: int      # weights the runner keeps alive beside the program (bytes)
    compile_s: float

    @property
    def peak(self) -> int:
        return self.argument + self.output - self.alias + self.temp


def _compiled(fn, *args) -> tuple[object, float]:
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return compiled.memory_analysis(), time.perf_counter() - t0


def _program(name: str, shape: str, fn, args, resident: int = 0) -> Program:
    m, s = _compiled(fn, *args)
    return Program(name, shape, m.argument_size_in_bytes, m.output_size_in_bytes, m.alias_size_in_bytes,
                   m.temp_size_in_bytes, resident, s)


def _abstract(shape, dtype):
    return jax.ShapeDtypeStruct(shape, dtype)


def relearn_train_config(overrides=()):
    """The relearning step's TrainConfig as experiments.probes trains it (SFT, AdamW, its remat
    policy and loss chunks), bf16 as its CPU proxy; `overrides` are further key=value changes."""
    return memory.cpu_proxy(load_config(os.path.join(ROOT, CONFIG), [
        "objective.method=sft", "optim.grad_accum=1", f"model.remat_policy={RELEARN_REMAT}",
        f"objective.chunk_size={RELEARN_CHUNK}", *overrides]))


def eval_programs(model_cfg, run_cfg, params, rows: int, seq: int) -> list[tuple[str, object, tuple]]:
    """(name, jitted function, abstract arguments) of the programs the probes evaluate with:
    infilling forward, likelihood, sampler (one denoising segment) at [rows, seq], and the int4
    quantisation of `params`. `run_cfg` is the config they run (``inference_config(model_cfg)``)."""
    i32 = jnp.int32
    ids = _abstract((rows, seq), i32)
    vec = _abstract((rows,), i32)
    spec = make_spec(model_cfg, gen_length=GEN_LENGTH, steps=GEN_LENGTH, block_length=32, temperature=1.0)
    canvas = build_canvas(model_cfg, [[0] * (seq - GEN_LENGTH)], [0], GEN_LENGTH, seq, rows)
    arrays = [canvas.input_ids, canvas.uncond_ids, canvas.attention_mask, canvas.position_ids, canvas.gen_index,
              canvas.row_ids]
    return [
        ("infilling forward", infilling._fill_logits, (run_cfg, params, ids, ids, ids)),
        ("likelihood", row_scores,
         # stratified (static): LLaDA's estimator, the evaluation's default
         (run_cfg, False, seq // 2, params, ids, ids, vec, vec, vec, vec, _abstract((), jnp.uint32),
          True, _abstract((), i32), _abstract((), jnp.float32))),
        ("sampler", denoise,
         (run_cfg, spec, params, _abstract((rows, GEN_LENGTH), i32),
          *[_abstract(np.shape(a), np.asarray(a).dtype) for a in arrays],
          _abstract((), jnp.uint32), _abstract((), i32), _abstract((), i32))),
        ("quantise int4", jax.jit(lambda p: quantization.quantize_params(model_cfg, p, 4)), (params,)),
    ]


def plan(rows: int, seq: int, relearn_rows: int, relearn_seq: int, layers: int, devices: list[int]) -> list[Program]:
    """The probes' programs at these shapes (see the module docstring)."""
    cfg_train = relearn_train_config()
    model_cfg = memory.model_config(cfg_train, os.path.join(ROOT, HF_CONFIG))
    if layers:
        model_cfg = model_cfg.replace(num_layers=layers)
    run_cfg = inference_config(model_cfg)
    params = abstract_params(model_cfg)
    weights = sum(int(np.prod(a.shape)) * jnp.dtype(a.dtype).itemsize for a in jax.tree.leaves(params))
    out = []
    for name, fn, args in eval_programs(model_cfg, run_cfg, params, rows, seq):
        out.append(_program(name, "params" if name.startswith("quantise") else f"{rows}x{seq}", fn, args))
        print(f"  {out[-1].name}: {out[-1].compile_s:.0f} s", flush=True)
    # Evaluating the quantised copy: the largest evaluation program, the original params beside it.
    evals = max(out[:3], key=lambda p: p.peak)
    out.append(dataclasses.replace(evals, name=f"eval of int4 copy ({evals.name})", resident=weights, compile_s=0.0))
    for n in devices:
        mesh = memory.make_cpu_mesh(cfg_train, n)
        m = memory.step_memory(cfg_train, model_cfg, mesh, relearn_rows, relearn_seq)
        out.append(Program(f"relearn step, {n} device{'s' if n > 1 else ''}", f"{relearn_rows}x{relearn_seq}",
                           m.argument, m.output, m.alias, m.temp, weights // n, m.compile_s))
        print(f"  {out[-1].name}: {out[-1].compile_s:.0f} s", flush=True)
    return out


def g(x: float) -> str:
    return f"{x / memory.GiB:.2f}"


def print_table(programs: list[Program], out=sys.stdout) -> None:
    print(f"{'program':<44} {'shape':>9} {'args':>7} {'out':>7} {'temp':>7} {'peak':>7} {'+resident':>9} "
          f"{'probe total':>11} {'compile s':>9}", file=out)
    for p in programs:
        print(f"{p.name:<44} {p.shape:>9} {g(p.argument):>7} {g(p.output - p.alias):>7} {g(p.temp):>7} "
              f"{g(p.peak):>7} {g(p.resident):>9} {g(p.peak + p.resident):>11} {p.compile_s:>9.1f}", file=out)


def add_shape_args(p: argparse.ArgumentParser) -> None:
    """The program shapes both probe benches take: evaluation rows x tokens, relearning rows x
    tokens, and the meshes the relearning step is compiled for."""
    p.add_argument("--rows", type=int, default=32, help="rows per evaluation program (the probes' --batch-size)")
    p.add_argument("--seq", type=int, default=256, help="tokens per evaluation row / canvas")
    p.add_argument("--relearn-rows", type=int, default=8, help="rows per relearning step (--relearn-batch-size)")
    p.add_argument("--relearn-seq", type=int, default=512, help="tokens per relearning row (the longest pair)")
    p.add_argument("--devices", type=int, nargs="*", default=[1, 8], help="meshes for the relearning step")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_args(p)
    p.add_argument("--layers", type=int, default=0, help="override the layer count (0: the model's 32)")
    a = p.parse_args(argv)
    print(f"backend: {jax.default_backend()}; LLaDA-8B ({CONFIG}, bf16 compiled as f16 on CPU); GiB per device",
          flush=True)
    programs = plan(a.rows, a.seq, a.relearn_rows, a.relearn_seq, a.layers, a.devices)
    print()
    print_table(programs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
