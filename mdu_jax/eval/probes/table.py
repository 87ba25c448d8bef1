"""The probes' result (``experiments.probes.run_probes``) as a plain-text table: one row per probe
measurement, one column per model.

Each knowledge measurement shows the key-fact recall of greedy answers where the rows carry key
facts (``fact``), else the ROUGE-L recall, and the answer probability (``prob``).
"""

from __future__ import annotations

from typing import Any


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def recall_key(scores: dict) -> str:
    """'fact_recall' where the knowledge scores have key facts, else 'rougeL_recall'."""
    return "fact_recall" if scores.get("fact_recall") is not None else "rougeL_recall"


def _knowledge_rows(title: str, by_model: dict[str, dict]) -> list[tuple[str, dict[str, Any]]]:
    first = next(iter(by_model.values()))
    key = recall_key(first)
    return [(f"{title}: {key}", {m: s.get(key) for m, s in by_model.items()}),
            (f"{title}: prob", {m: s.get("prob") for m, s in by_model.items()})]


def probe_rows(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(row label, {model label: value}) of every measurement in `result`, in probe order."""
    rows: list[tuple[str, dict[str, Any]]] = []
    probes = result["probes"]
    if "quantization" in probes:
        q = probes["quantization"]
        precisions = list(next(iter(q.values())))
        for split in ("forget", "retain"):
            for p in precisions:
                if split in next(iter(q.values()))[p]:
                    rows += _knowledge_rows(f"{split}, {p} weights", {m: v[p][split] for m, v in q.items()})
    if "relearn" in probes:
        r = probes["relearn"]
        first = next(iter(r.values()))
        held = f"held-out forget ({first['held_out_rows']} rows)"
        rows += _knowledge_rows(f"{held}, before relearning", {m: v["before"] for m, v in r.items()})
        for k in first["steps"]:
            rows += _knowledge_rows(f"{held}, after {k} relearning steps",
                                    {m: v["steps"][k]["held_out"] for m, v in r.items()})
            rows += _knowledge_rows(f"fine-tuned forget part ({first['train_rows']} rows), after {k} steps",
                                    {m: v["steps"][k]["train"] for m, v in r.items()})
    if "infilling" in probes:
        f = probes["infilling"]
        for order, curve in next(iter(f.values())).items():
            for j, ratio in enumerate(curve["ratios"]):
                rows.append((f"infilling r={ratio:g} ({order}): hidden tokens recovered",
                             {m: v[order]["token_accuracy"][j] for m, v in f.items()}))
    if "generation" in probes:
        g = probes["generation"]
        first = next(iter(g.values()))
        score = "fact hit" if first["score"] == "fact_hit" else "ROUGE-L recall"
        for alg in first["algorithms"]:
            head = f"sampled x{first['samples']} at T={first['temperature']:g} ({alg})"
            rows.append((f"{head}: best-of-{first['samples']} {score}",
                         {m: v["algorithms"][alg]["best_of_k"] for m, v in g.items()}))
            rows.append((f"{head}: mean {score}", {m: v["algorithms"][alg]["mean"] for m, v in g.items()}))
        if "paraphrased" in first:
            para = first["paraphrased"]
            for alg in para["algorithms"]:
                head = f"paraphrased questions ({para['rows']} rows), sampled x{para['samples']} ({alg})"
                rows.append((f"{head}: best-of-{para['samples']} {score}",
                             {m: v["paraphrased"]["algorithms"][alg]["best_of_k"] for m, v in g.items()}))
                rows.append((f"{head}: mean {score}",
                             {m: v["paraphrased"]["algorithms"][alg]["mean"] for m, v in g.items()}))
    return rows


def format_probe_table(result: dict[str, Any]) -> str:
    """The table text: a header with the model labels, then ``probe_rows``."""
    models = list(result["models"])
    rows = probe_rows(result)
    width = max([len("probe")] + [len(label) for label, _ in rows])
    cols = [max(8, len(m)) for m in models]
    lines = ["probe".ljust(width) + "  " + "  ".join(m.rjust(c) for m, c in zip(models, cols))]
    lines.append("-" * len(lines[0]))
    for label, values in rows:
        lines.append(label.ljust(width) + "  " + "  ".join(_fmt(values.get(m)).rjust(c) for m, c in zip(models, cols)))
    return "\n".join(lines)


__all__ = ["recall_key", "probe_rows", "format_probe_table"]
