"""What the results reports share: the report's command line, the machine line, the final write."""

from __future__ import annotations

import argparse
import re
import statistics
from collections import Counter
from collections.abc import Collection
from pathlib import Path

from rate.config import atomic_write_text
from rate.cli.records import check_results_csv, read_rows


def how_many(count: int, noun: str) -> str:
    """"1 run", "3 runs": a count and its noun, plural unless one."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def over_seeds(values: list[float], digits: int = 2) -> str:
    """Mean +- std over seeds with their count; "-" for none; one seed has no spread to show
    ("+- 0.00" would claim one)."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (n=1)"
    return f"{statistics.fmean(values):.{digits}f} +- {statistics.stdev(values):.{digits}f} (n={len(values)})"


def report_parser(prog: str, description: str, name: str, notes_help: str) -> argparse.ArgumentParser:
    """--csv results/NAME.csv, --out results/NAME.md and --notes results/NAME_notes.md."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--csv", type=Path, default=Path(f"results/{name}.csv"))
    parser.add_argument("--out", type=Path, default=Path(f"results/{name}.md"))
    parser.add_argument("--notes", type=Path, default=Path(f"results/{name}_notes.md"), help=notes_help)
    return parser


def read_report_rows(parser: argparse.ArgumentParser, csv: Path) -> list[dict]:
    """The CSV rows, or the parser's one-line error (exit 2) when there are none or the file is not
    a results CSV of this project."""
    from rate.config import ConfigError

    try:
        check_results_csv(csv)
    except ConfigError as err:
        parser.error(str(err))
    rows = read_rows(csv)
    if not rows:
        parser.error(f"{csv} has no rows; run the sweep first")
    return rows


def check_run_names(parser: argparse.ArgumentParser, csv: Path, rows: list[dict], parts: int, form: str,
                    models: Collection[str]) -> None:
    """The parser's one-line error unless every row's run name has ``parts`` parts (``form``,
    e.g. TASK/MODEL/seedN), which the page splits it into, and names a model of ``models`` second
    (the page has a place per known model: it would drop the rows of another)."""
    odd = [r["run"] for r in rows if len(r["run"].split("/")) != parts]
    if odd:
        parser.error(f"{csv}: run names this page cannot read, e.g. {odd[0]!r} (it reads {form})")
    unknown = sorted({r["run"].split("/")[1] for r in rows} - set(models))
    if unknown:
        parser.error(f"{csv}: rows of models this page has no place for: {', '.join(unknown)} "
                     f"(it knows {', '.join(models)})")


def single_return(row: dict) -> float:
    """The mean return of a run evaluated at one length (its only non-empty ``return_T*`` column,
    or ``return`` for a run evaluated at the environment's own length)."""
    (value,) = [v for k, v in row.items() if re.fullmatch(r"return(_T\d+)?", k) and v != ""]
    return float(value)


def machines(rows: list[dict]) -> str:
    """The distinct machines the rows ran on, e.g. 'x86_64, 2 cores, 2 torch threads, torch 2.13.0+cpu'
    (with ', GPU <name>' for rows trained on a GPU), each with its number of runs when there are
    several machines."""
    count = Counter(f"{r['machine']}, {r['cpu_count']} cores, {r['torch_threads']} torch threads, torch {r['torch']}"
                    + (f", GPU {r['gpu']}" if r.get("gpu") else "") for r in rows)
    if len(count) == 1:
        return next(iter(count))
    return "; ".join(f"{name} ({n} run{'s' if n > 1 else ''})" for name, n in sorted(count.items()))


def write_report(out: Path, text: str, notes: Path, plot_path: Path, n_rows: int) -> None:
    """Append the hand-written notes (when the file exists) and write the markdown atomically."""
    if notes.is_file():
        text += "\n" + notes.read_text()
    atomic_write_text(out, text)
    print(f"wrote {out} and {plot_path} from {n_rows} rows")
