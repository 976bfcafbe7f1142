"""The report's generation section (seq2seq, causal-lm): sample generations next to their references."""

from __future__ import annotations

SAMPLES = 10  # the first validation examples, in file order: the same ones every run of a data set


def generations(run, section_class):
    """How many outputs match their reference exactly, and the first SAMPLES inputs, references and outputs."""
    from lobell.report import html

    rows = run.predictions
    references = [row for row in rows if row.get("target")]
    exact = sum(str(row.get("prediction", "")).strip() == str(row["target"]).strip() for row in references)
    summary = html.table(["generations", "value"], [("validation examples", len(rows)),
                                                    ("generated exactly as the reference",
                                                     f"{exact} of {len(references)}")], ident="generations-summary")
    samples = [(row.get("index"), str(row.get("input", "")), str(row.get("target") or ""),
                str(row.get("prediction") or "")) for row in rows[:SAMPLES]]
    intro = html.paragraph(f"The first {len(samples)} validation examples: the reference and what the model "
                           f"generated (the run's generation: settings).", css="muted")
    table = html.table(["#", "input", "reference", "generated"], samples, ident="generations")
    return section_class(summary + "<h3>Sample generations</h3>" + intro + table)
