"""Compile time and step time of ``bench.train_step`` in two checkouts, interleaved, medians side by side.

    git worktree add /tmp/old <commit>
    python -m bench.compare_checkouts /tmp/old . --repeats 5
    python -m bench.compare_checkouts /tmp/old . --repeats 5 -- --lora 8 --fuse --remat dots_no_batch

Each repeat runs ``python -m bench.train_step --no-torch <args>`` once in the first checkout, then
once in the second (fresh processes, each importing its own checkout's ``mdu_jax``), so a change
in machine load hits both alike; the table gives every run, the medians and new/old ratios. On a
shared machine take ``uptime`` before and after: ratios hold better than absolute times.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys

ROW = re.compile(r"^jax \(mdu_jax\)\s+(?P<compile>[\d.]+)\s+(?P<step>[\d.]+)", re.M)


def run_once(checkout: str, bench_args: list[str]) -> tuple[float, float]:
    """(compile s, step s) of one ``bench.train_step`` process run from `checkout`."""
    env = dict(os.environ, PYTHONPATH=os.path.abspath(checkout), JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    done = subprocess.run([sys.executable, "-m", "bench.train_step", "--no-torch", *bench_args],
                          cwd=checkout, env=env, capture_output=True, text=True)
    match = ROW.search(done.stdout)
    if done.returncode or not match:
        raise RuntimeError(f"{checkout}: bench.train_step failed (exit {done.returncode}):\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return float(match["compile"]), float(match["step"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old", help="checkout of the reference commit")
    p.add_argument("new", help="checkout under test")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("bench_args", nargs="*", help="arguments for bench.train_step (after --)")
    a = p.parse_args(argv)
    runs: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
    for i in range(a.repeats):
        for name in ("old", "new"):
            compile_s, step_s = run_once(getattr(a, name), a.bench_args)
            runs[name].append((compile_s, step_s))
            print(f"repeat {i + 1}/{a.repeats} {name}: compile {compile_s:.2f} s, step {step_s:.4f} s", flush=True)
    med = {name: (statistics.median(c for c, _ in r), statistics.median(s for _, s in r)) for name, r in runs.items()}
    print(f"\nbench.train_step --no-torch {' '.join(a.bench_args)}  ({a.repeats} interleaved repeats, medians)")
    print(f"{'checkout':<10}{'compile s':>11}{'step s':>10}")
    for name in ("old", "new"):
        print(f"{name:<10}{med[name][0]:>11.2f}{med[name][1]:>10.4f}")
    print(f"{'new / old':<10}{med['new'][0] / med['old'][0]:>11.3f}{med['new'][1] / med['old'][1]:>10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
