"""Evaluation stages: the work of each set planned before anything runs, one progress bar per
stage whose total is that plan, and each stage's time and compilations measured.

A ``Stage`` is one evaluated set (RWKU's forget level 1, MMLU, BBH, ...): its examples, a line
saying what it does, the forward passes it will run (``Passes``: how many passes of which
compiled program over which [rows, length] shape, from the same batching functions the run
uses), and ``run(on_forward)``, which does the work and calls ``on_forward(n)`` as passes
finish. ``run_stages`` logs the plan (passes and the share of model FLOPs per stage, so a user
sees up front that BBH's long generations dominate), shows a bar per stage, and returns a
record per stage: seconds, XLA compilations and their seconds, passes, FLOPs.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Sequence

import jax
from tqdm.auto import tqdm

from mdu_jax.models.config import ModelConfig

log = logging.getLogger(__name__)
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@dataclasses.dataclass(frozen=True)
class Passes:
    """``count`` forward passes of compiled program ``program`` over ``rows`` x ``length``
    tokens each, the LM head on ``head_positions`` positions per row."""

    program: str
    count: int
    rows: int
    length: int
    head_positions: int


@dataclasses.dataclass
class Stage:
    """One evaluated set: ``run(on_forward)`` returns its (per-example records, aggregates)."""

    name: str
    examples: int
    work: str
    passes: list[Passes]
    run: Callable[[Callable[[int], None]], Any]

    @property
    def total(self) -> int:
        """Forward passes planned (the progress bar's total)."""
        return sum(p.count for p in self.passes)


def forward_flops(cfg: ModelConfig, rows: int, length: int, head_positions: int) -> float:
    """Model FLOPs of one forward pass over [rows, length] tokens: per token 2 x the layers'
    matmul parameters plus full (non-causal) attention, 4 x layers x length x heads x head_dim;
    plus 2 x hidden x vocab per LM-head position."""
    D, H, K, h, F = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size
    per_layer = D * H * h + 2 * D * K * h + H * h * D + 3 * D * F
    per_token = 2 * cfg.num_layers * per_layer + 4 * cfg.num_layers * length * H * h
    return float(rows) * (length * per_token + head_positions * 2 * D * cfg.vocab_size)


def stage_flops(cfg: ModelConfig, stage: Stage) -> float:
    """Model FLOPs of every planned pass of ``stage`` (padding rows and positions included)."""
    return sum(p.count * forward_flops(cfg, p.rows, p.length, p.head_positions) for p in stage.passes)


def _shapes(passes: Sequence[Passes]) -> str:
    merged: dict[tuple[int, int], int] = {}
    for p in passes:
        merged[(p.rows, p.length)] = merged.get((p.rows, p.length), 0) + p.count
    return ", ".join(f"{n} x [{r} x {t}]" for (r, t), n in merged.items()) or "-"


def format_plan(cfg: ModelConfig, stages: Sequence[Stage], title: str) -> str:
    """A table of the stages: examples, what each does, forward passes (shapes as
    count x [rows x tokens]) and each stage's share of the planned model FLOPs."""
    flops = [stage_flops(cfg, s) for s in stages]
    total = sum(flops) or 1.0
    rows = [("stage", "examples", "work", "passes", "share", "shapes")]
    rows += [(s.name, str(s.examples), s.work, str(s.total), f"{100 * f / total:.1f}%", _shapes(s.passes))
             for s, f in zip(stages, flops)]
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    lines = ["  ".join(c.ljust(w) if i in (0, 2) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             + "  " + r[5] for r in rows]
    head = (f"{title}: {len(stages)} stages, {sum(s.total for s in stages)} forward passes, "
            f"{sum(flops) / 1e12:.3g} TFLOP of model work (share: of those FLOPs; compile time not included)")
    return "\n".join([head] + lines)


class _CompileCounter:
    """Counts XLA compilations (and their seconds) while registered."""

    def __init__(self):
        self.count, self.seconds = 0, 0.0

    def __call__(self, event: str, duration: float, **kwargs) -> None:
        if event == COMPILE_EVENT:
            self.count += 1
            self.seconds += float(duration)


def _tqdm_bar(total: int, desc: str):
    return tqdm(total=total, desc=desc, unit="pass", leave=True, dynamic_ncols=True)


def run_stages(cfg: ModelConfig, stages: Sequence[Stage], *, title: str,
               progress: bool | Callable[[int, str], Any] = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Runs ``stages`` in order; returns ({stage name: what its run returned}, records).

    Logs ``format_plan`` first (logger ``mdu_jax.eval.stages``, INFO). ``progress``: True for a
    tqdm bar per stage (total = the stage's planned passes, advanced as passes finish), False
    for none, or a factory ``(total, description) -> bar`` (anything with ``update(n)`` and
    ``close()``). A record holds the stage's name, examples, passes, seconds, XLA compilations
    during it and their seconds, its planned model FLOPs and its passes by program and shape.
    """
    log.info("%s", format_plan(cfg, stages, title))
    factory = _tqdm_bar if progress is True else progress or None
    outputs: dict[str, Any] = {}
    records: list[dict[str, Any]] = []
    counter = _CompileCounter()
    jax.monitoring.register_event_duration_secs_listener(counter)
    try:
        for i, stage in enumerate(stages):
            bar = factory(stage.total, f"{title} {i + 1}/{len(stages)} {stage.name}") if factory else None
            compiles, compile_seconds = counter.count, counter.seconds
            started = time.perf_counter()
            try:
                outputs[stage.name] = stage.run(bar.update if bar is not None else _ignore)
            finally:
                if bar is not None:
                    bar.close()
            records.append({"name": stage.name, "examples": stage.examples, "passes": stage.total,
                            "seconds": round(time.perf_counter() - started, 3),
                            "compiles": counter.count - compiles,
                            "compile_seconds": round(counter.seconds - compile_seconds, 3),
                            "model_tflop": round(stage_flops(cfg, stage) / 1e12, 6),
                            "shapes": [{"program": p.program, "passes": p.count, "rows": p.rows, "length": p.length}
                                       for p in stage.passes]})
    finally:
        jax.monitoring.unregister_event_duration_listener(counter)
    return outputs, records


def _ignore(n: int) -> None:
    """An ``on_forward`` that does nothing (no progress bar)."""
