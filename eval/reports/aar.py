"""Regenerate results/aar.md and its plot from results/aar.csv (never edit them by hand).

    python -m eval.reports.aar [--csv results/aar.csv] [--out results/aar.md] [--notes results/aar_notes.md]

Besides the sweep's argmax evaluation, the page shows the evaluation with sampled actions of the
checkpoints in the folder aar_sampled/ beside the CSV (results/aar_sampled/; JSON written by
``python -m eval CHECKPOINT --sample``): with argmax actions a policy that always chooses the same
first action and always gives that answer succeeds without any memory.  Sampled, a policy that
ignores its first action succeeds with probability sum_a p(choose a) p(answer a): 0.5 when it
chooses as the data does (0 and 1 equally often), so sampling tests the recall.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from eval.reports.common import PageInputError
from eval.reports.tmaze import LABELS, TaskPage, fmt, write_page

AAR = TaskPage(
    "aar", "RATE and baselines on Action Associative Retrieval", 90,
    "Every model is trained on episodes of T = 90, except the rows marked T 3-90, trained on lengths drawn "
    "uniformly from 3 to 90 (its K steps x N segments are in the table); the answer is the agent's own first "
    "action",
)
SAMPLED = Path("results/aar_sampled")
SAMPLED_COMMAND = ("python -m eval runs/aar/$m/seed$s --lengths 90 180 900 --episodes {episodes} --sample --no-plot "
                   "--out results/aar_sampled/$m-seed$s.json (and 9600 for the memory models trained on T 3-90)")


def sampled_table(folder: Path = SAMPLED) -> list[str]:
    """Markdown lines: success with sampled actions per model and length, from folder/MODEL-seedS.json.
    PageInputError naming the file when one is not such an evaluation (``python -m eval --out``'s JSON)."""
    files = sorted(folder.glob("*-seed*.json"))
    if not files:
        return []
    table: dict = defaultdict(lambda: defaultdict(list))
    counts = set()  # episodes per length, as each evaluation recorded it
    for f in files:
        model = f.stem.rsplit("-seed", 1)[0]
        try:
            evaluation = json.loads(f.read_text(encoding="utf-8"))
            results = {int(t): float(r["success"]) for t, r in evaluation["results"].items()}
            counts.add(int(evaluation["episodes"]))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError,
                AttributeError) as err:
            raise PageInputError(f"{f}: not an evaluation written by `python -m eval --out` ({type(err).__name__}: "
                             f"{err})") from None
        for t, success in results.items():
            table[model][t].append(success)
    low, high = min(counts), max(counts)
    count, episodes_arg = (str(low), low) if low == high else (f"{low} to {high}", "N")
    lengths = sorted({t for per_t in table.values() for t in per_t})
    models = [m for m in LABELS if m in table] + sorted(set(table) - set(LABELS))
    lines = ["With sampled actions (from the policy's softmax; a policy that ignores its first action scores "
             "sum_a p(choose a) p(answer a), 0.5 if it chooses 0 and 1 equally often as the data does), the same "
             f"checkpoints, {count} episodes per length: `{SAMPLED_COMMAND.format(episodes=episodes_arg)}` "
             "for each model $m and seed $s "
             "below (the rows below are the checkpoints evaluated so; a model of the table above missing here was "
             "not)", "",
             "| model | " + " | ".join(f"T={t}" for t in lengths) + " |", "|---" * (len(lengths) + 1) + "|"]
    for m in models:
        lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(fmt(table[m].get(t, [])) for t in lengths) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    return write_page(AAR, "python -m eval.reports.aar", __doc__.split("\n\n")[0], argv,
                      extra=lambda csv: sampled_table(csv.parent / SAMPLED.name))


if __name__ == "__main__":
    raise SystemExit(main())
