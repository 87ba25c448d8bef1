"""One RWKU target's probes as the leakage probes' rows: ``--probes ... --benchmark rwku``.

RWKU has no (question, answer) forget set of its own; its forget probes (``forget_level1`` cloze,
``forget_level2`` questions, ``forget_level3`` adversarial) are what a model that forgot the
target cannot answer, and its neighbour probes (``neighbor_level1/2``, other people's facts next to
the target) what it must still answer. Each becomes a row {question, answer, level, type}: the
question is the user turn of RWKU's own evaluation (``eval.rwku.probe_prompt``), asked in the
chat template; RWKU's evaluation also writes "Answer:" after the assistant header, the probes do
not (their prompts are the same for every benchmark). The rows carry no key ``fact``: every probe
then scores ROUGE-L recall of the answer, RWKU's own score.
"""

from __future__ import annotations

from typing import Any, Sequence

from mdu_jax.data.sources import load_rwku
from mdu_jax.eval.rwku import PROBE_SETS, probe_prompt

FORGET_SETS = tuple(s for s in PROBE_SETS if s.startswith("forget_"))
NEIGHBOR_SETS = tuple(s for s in PROBE_SETS if s.startswith("neighbor_"))


def rwku_rows(subject: str | None, data_dir: str | None, sets: Sequence[str]) -> list[dict[str, Any]]:
    """[{question, answer, level (1-3), type}] of `subject`'s probes in `sets` (RWKU configs such
    as ``forget_level1``), in set order then file order; `data_dir`: a local RWKU copy (None: the Hub)."""
    rows = []
    for config in sets:
        level = int(config[-1])
        for row in load_rwku(config, subject, data_dir):
            rows.append({"question": probe_prompt(row, level)[0], "answer": str(row["answer"]), "level": level,
                         "type": row.get("type", "")})
    return rows


__all__ = ["FORGET_SETS", "NEIGHBOR_SETS", "rwku_rows"]
