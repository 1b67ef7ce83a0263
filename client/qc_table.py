"""Print a quality report as tables a hospital IT person can read."""

from rich.console import Console
from rich.table import Table

from common.data.quality import QualityReport

__all__ = ["print_quality_report"]

_MAX_SKIPPED_SHOWN = 20


def print_quality_report(report: QualityReport, console: Console) -> None:
    """Modalities, skipped files with reasons, spacing problems, labels and splits."""
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
    if report.skipped_files:
        skipped = Table(title=f"Skipped files ({len(report.skipped_files)}), with the reason")
        skipped.add_column("file")
        skipped.add_column("reason")
        for entry in report.skipped_files[:_MAX_SKIPPED_SHOWN]:
            skipped.add_row(entry["path"], entry["reason"])
        console.print(skipped)
        if len(report.skipped_files) > _MAX_SKIPPED_SHOWN:
            console.print(
                f"... and {len(report.skipped_files) - _MAX_SKIPPED_SHOWN} more: "
                "see the JSON report"
            )
    for entry in report.inconsistent_spacing:
        console.print(
            f"[yellow]series {entry['series']}: slice gaps from {entry['min_gap_mm']:.2f} "
            f"to {entry['max_gap_mm']:.2f} mm (missing or duplicated slices?)[/]"
        )
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
