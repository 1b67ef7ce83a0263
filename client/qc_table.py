"""Print a quality report as tables a hospital IT person can read."""

import re
from collections import Counter

from rich.console import Console
from rich.table import Table
from rich.text import Text

from common.data.quality import QualityReport
from common.data.registered_prepare import MISSING_STATUS

__all__ = ["print_quality_report", "print_skipped", "summary_line"]

#: Example files shown per reason (the JSON report lists every file).
_EXAMPLES_SHOWN = 2
_NUMBER = re.compile(r"\d+")


def print_skipped(skipped: list[dict[str, str]], console: Console, noun: str = "files") -> None:
    """Skipped files grouped by identical reason, with a count and examples, widest group first.

    Names and reasons are printed literally (a file called ``[red]x[/red].dcm`` stays so).
    """
    if not skipped:
        return
    groups: dict[str, list[str]] = {}
    shown: dict[str, str] = {}  # reasons that differ only in sizes share a row, sizes as 'n'
    for entry in skipped:
        key = _NUMBER.sub("n", entry["reason"])
        groups.setdefault(key, []).append(entry["path"])
        shown[key] = entry["reason"] if shown.get(key, entry["reason"]) == entry["reason"] else key
    table = Table(title=f"Skipped {noun} ({len(skipped)}), grouped by reason")
    table.add_column("files", justify="right")
    table.add_column("reason")
    table.add_column("for example")
    for reason, paths in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        examples = ", ".join(paths[:_EXAMPLES_SHOWN]) + (", ..." if len(paths) > 2 else "")
        table.add_row(str(len(paths)), Text(shown[reason]), Text(examples))
    console.print(table)


def print_quality_report(report: QualityReport, console: Console) -> None:
    """Modalities, skipped files grouped by reason, spacing problems, labels and splits.

    Ends with the one summary line whose counts are those of the tables and the JSON report.
    """
    data = report.as_dict()
    modalities = Table(title=f"Images found ({data['files_seen']} files scanned)")
    for column in ("modality", "series", "images", "min", "max", "mean", "std"):
        modalities.add_column(column, justify="right" if column != "modality" else "left")
    for modality, series in sorted(report.series_per_modality.items()):
        stats = data["intensity_per_modality"].get(modality, {})
        modalities.add_row(
            modality,
            str(series),
            str(report.images_per_modality.get(modality, 0)),
            *(f"{stats[k]:.1f}" if k in stats else "-" for k in ("min", "max", "mean", "std")),
        )
    console.print(modalities)
    print_skipped(report.skipped_files, console)
    for entry in report.inconsistent_spacing:
        console.print(
            f"[yellow]series {entry['series']}: slice gaps from {entry['min_gap_mm']:.2f} "
            f"to {entry['max_gap_mm']:.2f} mm (missing or duplicated slices?)[/]"
        )
    _print_registration(report, console)
    if report.class_counts:
        console.print(
            "Labelled images per class: "
            + ", ".join(f"{k} {v}" for k, v in report.class_counts.items())
            + f"; unlabelled: {report.unlabelled_images} images "
            f"({report.unlabelled_series} series without any label)"
        )
    if report.split_counts:
        console.print(
            "Split by study: " + ", ".join(f"{k} {v}" for k, v in report.split_counts.items())
        )
    console.print(summary_line(report), highlight=False)


def _print_registration(report: QualityReport, console: Console) -> None:
    """One line on the registered series (MI before/after, time) and each study left out."""
    rows = [r for r in report.registration if r.get("status") != MISSING_STATUS]
    zero_filled = [r for r in report.registration if r.get("status") == MISSING_STATUS]
    if rows:
        done = [r for r in rows if "metric_after" in r and r.get("status") == "registered"]
        line = f"Registration: {len(done)} of {len(rows)} series registered"
        if done:
            before = sorted(float(r["metric_before"]) for r in done)[len(done) // 2]
            after = sorted(float(r["metric_after"]) for r in done)[len(done) // 2]
            seconds = sorted(float(r["seconds"]) for r in done)[len(done) // 2]
            line += (
                f"; median Mattes MI {before:.3f} -> {after:.3f} (lower is better), "
                f"{seconds:.1f} s per series"
            )
        console.print(line, highlight=False)
    if zero_filled:
        counts = Counter(str(r["sequence"]) for r in zero_filled)
        named = ", ".join(f"{name} in {count}" for name, count in sorted(counts.items()))
        console.print(
            f"Missing sequences filled with zeros (--missing-sequence zeros): {named} "
            f"of the studies ({len({r['study'] for r in zero_filled})} studies)",
            highlight=False,
        )
    if report.excluded:
        table = Table(title=f"Left out whole ({len(report.excluded)})")
        table.add_column("series or study")
        table.add_column("reason")
        for entry in report.excluded:
            table.add_row(Text(entry["key"]), Text(entry["reason"]))
        console.print(table)


def summary_line(report: QualityReport) -> str:
    """'N files: I images in S series used or measured, K skipped' (the report's own counts)."""
    images = sum(report.images_per_modality.values())
    series = sum(report.series_per_modality.values())
    return (
        f"{report.files_seen} files: {images} images in {series} series read, "
        f"{len(report.skipped_files)} files skipped"
        + (
            f", {report.segmentation_objects} DICOM SEG objects read"
            if report.segmentation_objects
            else ""
        )
    )
