"""Where ``bench.train_step``'s compile time goes: tracing, lowering, XLA; with deterministic sizes.

    python -m bench.compile_split                        # this checkout, the tiny default step
    python -m bench.compile_split --repeats 3 -- --lora 8 --fuse
    PYTHONPATH=/tmp/old python bench/compile_split.py    # another checkout's mdu_jax and bench.train_step

``bench.train_step`` times ``lower + compile`` as one number, once, in a fresh process. This
splits it into the trace to a jaxpr, the lowering to StableHLO and XLA's compile, and prints the
sizes that decide them and do not depend on machine load: jaxpr equations (recursively), lines of
the lowered module, the counts of its main op kinds, the optimised HLO's instructions and fusions,
and the Python function calls the trace makes (``--profile``, under cProfile; this slows the
trace, so the timed repeats run without it).

The first pass is exactly ``bench.train_step``'s timed region (the first, cold trace of the
process: it also pays one-time imports and caches), and every program JAX traces, lowers or
compiles inside it is listed from ``jax.monitoring``'s events, so a program other than the step
shows up by name. Then the medians over ``--repeats`` fresh (warm) traces in this process.
Timings only mean something on an otherwise idle machine. ``--save-hlo PATH`` writes the
step's optimised HLO, to diff between checkouts.

Run from a checkout's root (``python -m``), or by path with ``PYTHONPATH`` naming another
checkout: the step is built by that checkout's ``bench.train_step`` (whose helpers every
checkout since 541a937 has), so two commits compare on the same footing.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import pstats
import re
import statistics
import sys
import time

import jax
import jax.extend.core
import jax.monitoring

import bench.train_step as bt

OP = re.compile(r"\b(stablehlo\.[a-z_]+|call) ")  # every op of the lowered module, calls included
# An instruction of an optimised HLO module: "name = type opcode(" (the opcode after the shape).
HLO_OP = re.compile(r"^\s+(?:ROOT )?%?[\w.\-]+ = .*?\s([a-z][a-z\-]*)\(", re.M)
HLO_COMPUTATION = re.compile(r"^(?:ENTRY )?%?[\w.\-]+ .*\{$", re.M)  # a computation's header line
EVENTS = {"/jax/core/compile/jaxpr_trace_duration": "trace",
          "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
          "/jax/core/compile/backend_compile_duration": "compile"}


class ProgramLog:
    """Every (kind, function name, seconds) that JAX reports while `recording` is true: traces of
    jitted functions (nested ones included), lowerings and XLA compiles."""

    def __init__(self):
        self.recording = False
        self.events: list[tuple[str, str, float]] = []
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event: str, secs: float, **kwargs):
        if self.recording and event in EVENTS:
            self.events.append((EVENTS[event], str(kwargs.get("fun_name", "?")), secs))

    def table(self) -> str:
        """One line per (kind, name): count and total seconds, in order of first appearance."""
        rows: dict[tuple[str, str], list[float]] = {}
        for kind, name, secs in self.events:
            rows.setdefault((kind, name), []).append(secs)
        return "\n".join(f"  {kind:<8}{name:<48}{len(t):>4}x {sum(t):>8.3f} s" for (kind, name), t in rows.items())


def hlo_counts(hlo_text: str) -> collections.Counter:
    """Instruction counts of an optimised HLO module by opcode (fusion bodies included)."""
    return collections.Counter(HLO_OP.findall(hlo_text))


def build(bench_argv: list[str]):
    """(jitted step, (state, anchor, batch)) exactly as ``bench.train_step.time_jax`` builds them."""
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="tiny")
    p.add_argument("--layers", type=int, default=0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--param-dtype", dest="param_dtype", default="float32")
    p.add_argument("--anchor-dtype", dest="anchor_dtype", default=None)
    p.add_argument("--remat", default="none")
    p.add_argument("--attention", default="xla")
    p.add_argument("--chunk", type=int, default=0)
    p.add_argument("--tau", type=float, default=1.0)
    p.add_argument("--master-weights", dest="master_weights", action="store_true")
    p.add_argument("--lora", type=int, default=0)
    p.add_argument("--fuse", action="store_true")
    args = p.parse_args(bench_argv)
    args.anchor_dtype = args.anchor_dtype or args.param_dtype
    cfg = bt.model_config(args)
    batch = jax.device_put(bt.make_batch(cfg, args.batch, args.seq))
    obj = bt.ObjectiveSection(method="mdu", tau=args.tau, retain_weight=1.0, chunk_size=args.chunk)
    tx, _ = bt.make_optimizer(bt.OptimSection(lr=1e-5, warmup_ratio=0.0, schedule="constant",
                                              master_weights=args.master_weights), 100)
    spec = bt.lora_lib.LoraSpec(args.lora, 2.0 * args.lora) if args.lora else None
    loss_fn = bt.make_loss_fn(cfg, obj, lora=spec, fuse_anchor_pass=args.fuse)
    params = jax.jit(lambda k: bt.mj.init_params(cfg, k))(jax.random.key(0))
    anchor = jax.tree.map(lambda x: x.astype(args.anchor_dtype), params)
    if spec is not None:
        params = jax.jit(lambda k: bt.lora_lib.init_adapters(cfg, spec, k, cfg.weight_dtype))(jax.random.key(1))
    state = jax.jit(lambda p: bt.init_state(p, tx, 0))(params)
    return bt.make_step, loss_fn, tx, (state, anchor, batch)


def jaxpr_equations(jaxpr) -> int:
    """Equations of a (closed) jaxpr, counting those inside sub-jaxprs (scan, cond, remat, pjit...)."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    n = 0
    for eqn in jaxpr.eqns:
        n += 1
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            n += jaxpr_equations(sub)
    return n


def one_pass(make_step, loss_fn, tx, inputs, *, compile_too: bool):
    """(trace s, lower s, compile s or None, traced, lowered, compiled or None) for a freshly
    jitted step (``jit(...).lower(...)`` is ``trace(...).lower()``: bench.train_step's region)."""
    step = jax.jit(make_step(loss_fn, tx), donate_argnums=(0,))
    t0 = time.perf_counter()
    traced = step.trace(*inputs)
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    compile_s, compiled = None, None
    if compile_too:
        compiled = lowered.compile()
        compile_s = time.perf_counter() - t2
    return t1 - t0, t2 - t1, compile_s, traced, lowered, compiled


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="timed trace/lower/compile repeats (median)")
    p.add_argument("--profile", action="store_true", help="also count Python calls of one trace (cProfile)")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip XLA compiles (sizes only)")
    p.add_argument("--save-hlo", dest="save_hlo", default=None, help="write the step's optimised HLO here")
    p.add_argument("bench_args", nargs="*", help="bench.train_step's model/step arguments (after --)")
    a = p.parse_args(argv)
    log = ProgramLog()
    make_step, loss_fn, tx, inputs = build(a.bench_args)

    log.recording = True
    first = one_pass(make_step, loss_fn, tx, inputs, compile_too=a.compile)
    log.recording = False
    traced, lowered, compiled = first[3], first[4], first[5]
    text = lowered.as_text()
    ops = collections.Counter(OP.findall(text))
    print(f"checkout: {bt.__file__.rsplit('/bench/', 1)[0]}  step args: {' '.join(a.bench_args) or '(defaults)'}")
    print(f"jaxpr equations (recursive): {jaxpr_equations(traced.jaxpr)}")
    print(f"lowered module: {text.count(chr(10))} lines, {len(text)} characters")
    print("lowered ops: " + ", ".join(f"{k.split('.')[-1]} {v}" for k, v in ops.most_common(16)))
    first_compile = f"{first[2]:.3f} s" if first[2] is not None else "skipped"
    print(f"first (cold) pass, bench.train_step's timed region: trace {first[0]:.3f} s, lowering {first[1]:.3f} s, "
          f"XLA compile {first_compile}")
    print("programs traced / lowered / compiled in that region (jax.monitoring):\n" + log.table())
    if compiled is not None:
        hlo = compiled.as_text()
        counts = hlo_counts(hlo)
        print(f"optimised HLO: {hlo.count(chr(10))} lines, {len(HLO_COMPUTATION.findall(hlo))} computations, "
              f"{sum(counts.values())} instructions, {counts['fusion']} fusions")
        print("optimised ops: " + ", ".join(f"{k} {v}" for k, v in counts.most_common(20)))
        if a.save_hlo:
            with open(a.save_hlo, "w") as f:
                f.write(hlo)
    if a.profile:
        prof = cProfile.Profile()
        step = jax.jit(make_step(loss_fn, tx), donate_argnums=(0,))
        prof.enable()
        step.trace(*inputs)
        prof.disable()
        stats = pstats.Stats(prof)
        calls = sum(s[1] for s in stats.stats.values())  # primitive + recursive calls
        print(f"Python calls in one (warm) trace: {calls}")
    times = [one_pass(make_step, loss_fn, tx, inputs, compile_too=a.compile)[:3] for _ in range(a.repeats)]
    med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
    print(f"{'trace s':>9}{'lower s':>9}{'compile s':>11}   (medians of {a.repeats} warm repeats)")
    compile_s = med([t[2] for t in times if t[2] is not None])
    print(f"{med([t[0] for t in times]):>9.3f}{med([t[1] for t in times]):>9.3f}{compile_s:>11.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
