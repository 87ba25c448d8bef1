"""The end-of-run summary: one paragraph (what was trained, on what, how long, where each output went)
and the same facts as ``<output_dir>/run_summary.json``, whose presence marks a finished run."""

from __future__ import annotations

import os
from typing import Any


def _count(n: float) -> str:
    return f"{int(round(n)):,}"


def _steps(n: int) -> str:
    return f"{n} optimiser step{'s' * (n != 1)}"


def _rows(data: dict[str, Any]) -> str:
    text = f"{data.get('forget_rows', 0)} forget + {data.get('retain_rows', 0)} retain rows"
    cut = [f"{split}: {n[0]} truncated, {n[1]} dropped" for split, n in
           ((s, (data.get("truncated_by_split", {}).get(s, 0), data.get("dropped_by_split", {}).get(s, 0)))
            for s in ("forget", "retain")) if n[0] or n[1]]
    return text + (f" ({'; '.join(cut)})" if cut else "")


def make_summary(*, method: str, output_dir: str, optimizer_steps: int, grad_accum: int, batch_size: int,
                 data: dict[str, Any], tokens: float, tokens_this_run: float, seconds: float,
                 resumed_from: int | None, steps_this_run: int, last: dict[str, float], outputs: dict[str, Any]
                 ) -> dict[str, Any]:
    """The summary dict (JSON-ready) of a finished run; `outputs` maps output names to paths."""
    return {"method": method, "output_dir": os.path.abspath(output_dir), "optimizer_steps": int(optimizer_steps),
            "micro_steps": int(optimizer_steps) * int(grad_accum), "grad_accum": int(grad_accum),
            "batch_size": int(batch_size), "data": data, "tokens": int(round(tokens)),
            "tokens_this_run": int(round(tokens_this_run)), "seconds_this_run": round(float(seconds), 1),
            "resumed_from": resumed_from, "steps_this_run": int(steps_this_run),
            "last": {k: float(v) for k, v in last.items()}, "outputs": outputs}


def summary_text(s: dict[str, Any]) -> str:
    """The summary as one paragraph (the ``python -m mdu_jax.train`` end-of-run report)."""
    steps = s["optimizer_steps"]
    accum = s["grad_accum"]
    unit = (f"{_steps(steps)} of {s['batch_size']} rows" if accum == 1 else
            f"{_steps(steps)} ({s['micro_steps']} micro-steps of {s['batch_size']} rows, grad_accum {accum})")
    if s.get("resumed_from"):
        n = s["steps_this_run"]
        this = (f"this invocation resumed from step {s['resumed_from']} and trained {n} step{'s' * (n != 1)} "
                f"in {s['seconds_this_run']:.1f} s")
    else:
        this = f"in {s['seconds_this_run']:.1f} s"
    loss = s["last"].get("loss")
    parts = [f"{s['method']} run finished: {unit} on {_rows(s['data'])}, {_count(s['tokens'])} tokens, {this}"
             f" (model loading and compilation included)" + (f"; last logged loss {loss:.4g}" if loss is not None
                                                               else "") + "."]
    outs = s["outputs"]
    where = [f"final weights {outs['final']} (HF folder)"]
    if outs.get("export_hf"):
        where.append(f"HF export {outs['export_hf']}")
    where.append(f"checkpoints {outs['checkpoints']}")
    where.append(f"metrics {outs['metrics']}")
    if outs.get("tensorboard"):
        where.append(f"TensorBoard {outs['tensorboard']}")
    where.append(f"config {outs['config']}")
    where.append(f"this summary {outs['summary']}")
    parts.append("Outputs: " + "; ".join(where) + ".")
    return " ".join(parts)
