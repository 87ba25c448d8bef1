"""Wall time of ``python -m mdu_jax.evaluate --benchmark rwku`` on a tiny LLaDA, whole process.

    python bench/rwku_eval.py                                  # this checkout, median of 3
    python bench/rwku_eval.py --checkout ../main --checkout .  # before / after, back to back
    python bench/rwku_eval.py --repeats 1 --profile prof.out   # one run under cProfile

The model is built the way the tests build theirs (``tests/eval/helpers.tiny_models``): a BPE
tokenizer of ``--vocab`` entries fitted on the target's probe and MIA texts, and a random
LLaDA in the real HF layout (D=64, 2 layers, 4 heads by default), written to a temporary
folder. The timed command is the one issue 16 quotes, with the shared data:

    python -m mdu_jax.evaluate --model M --benchmark rwku --subject "Stephen King" \\
        --data-dir ../shared/data/rwku --max-examples 4

run as a fresh process per repeat (start-up, imports, model load and every compilation
included), with the progress bar on, as a user runs it. Each checkout runs with its own folder
first on PYTHONPATH; repeats alternate between checkouts. The table gives the median and the
spread of the wall times and, when the result JSON has them (``stages``), each stage's median
seconds and its XLA compilations, then all stages together, the time outside them (start-up,
imports, model load) and the total wall time. The 1-minute load average is printed before and after:
absolute times depend on it, so compare checkouts within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)  # this checkout's mdu_jax builds the model

from mdu_jax.data.sources import load_rwku  # noqa: E402
from mdu_jax.demo.model import write_demo_model  # noqa: E402
from mdu_jax.demo.tokenizer import build_tokenizer  # noqa: E402

SUBJECT = "Stephen King"
TOKENIZER_CONFIGS = ("forget_level1", "forget_level2", "forget_level3", "neighbor_level1", "neighbor_level2")


def build_model(folder: str, data_dir: str, *, vocab: int, hidden: int, layers: int, heads: int) -> str:
    """Writes the tiny model into ``folder``/llada (tokenizer fitted on the target's texts)."""
    texts = [r["query"] + " " + r["answer"] for c in TOKENIZER_CONFIGS for r in load_rwku(c, SUBJECT, data_dir)]
    texts += [r["text"] for r in load_rwku("mia_forget", SUBJECT, data_dir)[:3]]
    build_tokenizer(texts, os.path.join(folder, "tok"), "llada", vocab_size=vocab)
    path = os.path.join(folder, "llada")
    write_demo_model(path, os.path.join(folder, "tok"), hidden_size=hidden, num_layers=layers, num_heads=heads,
                     seed=0, family="llada")
    return path


def run_once(checkout: str, model: str, data_dir: str, out: str, extra: list[str],
             profile: str | None) -> tuple[float, dict]:
    """Seconds of one whole ``evaluate`` process and its result JSON."""
    env = dict(os.environ, PYTHONPATH=os.path.abspath(checkout))
    env.setdefault("JAX_PLATFORMS", "cpu")
    cmd = [sys.executable]
    if profile:
        cmd += ["-m", "cProfile", "-o", profile]
    cmd += ["-m", "mdu_jax.evaluate", "--model", model, "--benchmark", "rwku", "--subject", SUBJECT,
            "--data-dir", data_dir, "--max-examples", "4", "--output", out, *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=checkout, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{checkout}: evaluate exited {proc.returncode}\n{proc.stderr[-4000:]}")
    with open(out, encoding="utf-8") as f:
        return seconds, json.load(f)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkout", action="append", help="a checkout to time (repeatable; default this one)")
    p.add_argument("--data-dir", default=os.path.join(os.path.dirname(HERE), "shared", "data", "rwku"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--vocab", type=int, default=320)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--profile", help="write a cProfile of the (last) run of the first checkout here")
    p.add_argument("--keep", help="build the model in this folder and keep it (default: a temporary one)")
    p.add_argument("extra", nargs="*", help="more evaluate arguments (after --)")
    args = p.parse_args()
    checkouts = args.checkout or [HERE]
    data_dir = os.path.abspath(args.data_dir)
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average; {os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory(prefix="bench-rwku-") as tmp:
        folder = args.keep or tmp
        model = build_model(folder, data_dir, vocab=args.vocab, hidden=args.hidden, layers=args.layers,
                            heads=args.heads)
        times: dict[str, list[float]] = {c: [] for c in checkouts}
        stages: dict[str, list[dict]] = {c: [] for c in checkouts}
        # Interleaved, so that a change in the machine's load hits every checkout alike.
        for rep in range(args.repeats):
            for c in checkouts:
                prof = args.profile if args.profile and c == checkouts[0] and rep == args.repeats - 1 else None
                seconds, result = run_once(c, model, data_dir, os.path.join(tmp, "out.json"), args.extra, prof)
                times[c].append(seconds)
                stages[c].append({r["name"]: r for r in result.get("stages") or []})
                print(f"  {c}: run {rep + 1}: {seconds:.1f} s (load {os.getloadavg()[0]:.2f})", flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f}")
    print(f"\n{'checkout':<32} {'median s':>9} {'min s':>7} {'max s':>7}")
    for c in checkouts:
        t = times[c]
        print(f"{os.path.relpath(c):<32} {statistics.median(t):9.1f} {min(t):7.1f} {max(t):7.1f}")
    for c in checkouts:
        names = list(dict.fromkeys(k for s in stages[c] for k in s))
        if names:
            print(f"\nstages of {os.path.relpath(c)}: median seconds (compile seconds), compilations, passes")
            for k in names:
                runs = [s[k] for s in stages[c] if k in s]
                print(f"  {k:<16} {statistics.median(r['seconds'] for r in runs):8.1f} "
                      f"({statistics.median(r['compile_seconds'] for r in runs):5.1f}) "
                      f"{runs[0]['compiles']:4d} {runs[0]['passes']:6d}")
            # Per run: stages, compilations and the wall time outside the stages (start-up, imports,
            # model load, data, writing the result), medians over the repeats.
            total = [sum(r["seconds"] for r in s.values()) for s in stages[c]]
            comp = [sum(r["compile_seconds"] for r in s.values()) for s in stages[c]]
            print(f"  {'all stages':<16} {statistics.median(total):8.1f} ({statistics.median(comp):5.1f}) "
                  f"{sum(r['compiles'] for r in stages[c][0].values()):4d} "
                  f"{sum(r['passes'] for r in stages[c][0].values()):6d}")
            print(f"  {'outside stages':<16} {statistics.median(t - s for t, s in zip(times[c], total)):8.1f}")
            print(f"  {'total (wall)':<16} {statistics.median(times[c]):8.1f}")

if __name__ == "__main__":
    main()
