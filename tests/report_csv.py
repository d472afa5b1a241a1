"""Results CSVs for the report pages' tests, as the trainers write them."""

import csv


def write_csv(path, rows: list[dict]) -> None:
    """``rows`` as a CSV at ``path``: every column any row has, in first-seen order; a row without
    one leaves its cell empty."""
    columns = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
