"""``medfed predict``: run a trained model over a site's images and write what it predicts."""

import json
import logging
import re
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from client.inference.channel_saliency import (
    channel_shares,
    sequence_names,
    write_sequence_overlays,
)
from client.inference.dicom_seg import SegWriteError, write_dicom_seg
from client.inference.geometry import to_source_size
from client.inference.inputs import NoDecodableImage, PreparedInput, read_input
from client.inference.mask_comparison import compare_with_mask, mean_comparison
from client.inference.model import TrainedModel, load_trained_model
from client.inference.overlays import heat_overlay, mask_overlay, write_png
from client.inference.replay import PreprocessingOverrides, replay_preprocessing
from client.inference.saliency import Saliency
from client.inference.sources import Skipped, Source, find_sources
from client.inference.study_inputs import read_studies
from client.inference.study_replay import StudyReplay, study_replay
from client.inference.writers import PredictionsCsv, write_nifti_mask
from common.data.dicom_prepare import PreprocessingConfig
from common.data.nifti_cases import NiftiCase
from common.data.volume_prepare import nifti_volume, read_volume_case, series_volume
from common.data.volumes import to_source_grid
from common.errors import DataFormatError
from common.tasks.volume_segmentation import predict_volume

__all__ = ["PredictOptions", "decide", "decision", "run_predict"]

logger = logging.getLogger(__name__)

SUMMARY_NAME = "summary.json"
CSV_NAME = "predictions.csv"
_COLUMNS = (
    TextColumn("{task.description}"),
    BarColumn(),
    MofNCompleteColumn(),
    TimeElapsedColumn(),
)


@dataclass(frozen=True)
class PredictOptions:
    """What ``medfed predict`` was asked to do."""

    model: Path
    input: Path
    out: Path
    #: Overrides of the model's preprocessing contract, which they must match; they apply
    #: only to a model without one. None: not given.
    preprocessing: PreprocessingOverrides = PreprocessingOverrides()
    batch_size: int = 32
    saliency: bool = True
    #: Segmentation: the site's own masks (same names as the 2D inputs) to score against.
    masks: Path | None = None
    #: A multi-sequence model: the site's sequence rule (``NAME=PATTERN,...``), as at prepare.
    sequences: str | None = None
    #: A model registered to a reference volume: that volume (checked against the contract).
    reference: Path | None = None


class _Stems:
    """Distinct, file-system-safe output names derived from input paths."""

    def __init__(self) -> None:
        self._used: set[str] = set()

    def __call__(self, name: str) -> str:
        suffixes = r"(\.nii\.gz|\.nii|\.dcm|\.png|\.jpe?g|\.tiff?|\.bmp|\.gif)$"
        base = re.sub(suffixes, "", name, flags=re.IGNORECASE)
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", base.replace("/", "__")).strip("._") or "input"
        stem, number = base, 2
        while stem in self._used:
            stem, number = f"{base}_{number}", number + 1
        self._used.add(stem)
        return stem


def decide(probs: np.ndarray, threshold: float | None) -> np.ndarray:
    """Class index per image: class 1 when its probability is at least ``threshold``, else 0.

    Without a threshold, argmax. The rule is the one the federation's thresholded metrics use
    (common.tasks.threshold).
    """
    if threshold is None:
        return probs.argmax(axis=1)
    return (probs[:, 1] >= threshold).astype(np.int64)


def decision(model: TrainedModel) -> dict[str, Any]:
    """How ``medfed predict`` decides a class, as summary.json and the console state it."""
    if model.threshold is None:
        return {
            "rule": "argmax",
            "threshold": None,
            "text": "argmax (the checkpoint stores no decision threshold)",
        }
    positive = model.output_names[1]
    return {
        "rule": "threshold",
        "threshold": model.threshold,
        "positive_class": positive,
        "text": f"{positive} when p_{positive} >= {model.threshold:.4f} (the threshold stored "
        f"in the checkpoint, chosen on {model.threshold_chosen_on} in round {model.round_number})",
    }


def _probabilities(model: TrainedModel, batch: np.ndarray, batch_size: int) -> np.ndarray:
    """Softmax over the network's outputs: [N, K] or [N, K, size, size]."""
    parts = []
    with torch.no_grad():
        for start in range(0, len(batch), batch_size):
            logits = model.network(torch.from_numpy(batch[start : start + batch_size]))
            parts.append(torch.softmax(logits, dim=1).numpy())
    return np.concatenate(parts)


class _Predictor:
    """Writes one input's outputs; keeps what is shared across inputs (CSV, Grad-CAM hooks)."""

    def __init__(
        self, model: TrainedModel, options: PredictOptions, config: PreprocessingConfig
    ) -> None:
        self.model = model
        self.options = options
        self.config = config
        self.target_spacing = config.target_spacing
        self.stems = _Stems()
        self.csv: PredictionsCsv | None = None
        self.saliency: Saliency | None = None
        #: A fused model's sequences (from its contract): Grad-CAM is drawn on each of them.
        self.sequences = sequence_names(model.preprocessing)
        if model.task == "classification":
            self.csv = PredictionsCsv(options.out / CSV_NAME, model.output_names)
            if options.saliency:
                self.saliency = Saliency(model.network, model.in_channels, model.size)

    def _png_paths(self, folder: str, stem: str, count: int) -> list[Path]:
        base = self.options.out / folder
        if count == 1:
            return [base / f"{stem}.png"]
        return [base / stem / f"slice-{i:04d}.png" for i in range(count)]

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.options.out).as_posix()

    def classify(self, item: PreparedInput, stem: str) -> dict[str, Any]:
        """CSV rows and Grad-CAM overlays of one input; returns its summary entry."""
        probs = _probabilities(self.model, item.batch, self.options.batch_size)
        predicted = decide(probs, self.model.threshold)
        assert self.csv is not None
        self.csv.add(item.image_files, range(len(probs)), item.image_frames, probs, predicted)
        counts = np.bincount(predicted, minlength=len(self.model.output_names))
        entry: dict[str, Any] = {
            "predicted": {n: int(c) for n, c in zip(self.model.output_names, counts, strict=True)}
        }
        if self.saliency is not None:
            maps = self.saliency(item.batch, predicted)
            heat = to_source_size(
                maps, item.display.shape[1:], item.spacing, self.target_spacing, nearest=False
            )
            paths = self._png_paths("saliency", stem, len(heat))
            for image, heat_map, path in zip(item.display, heat, paths, strict=True):
                write_png(heat_overlay(image, heat_map), path)
            entry["saliency_overlays"] = [self._relative(p) for p in paths]
            if self.sequences and item.batch.shape[1] >= len(self.sequences):
                entry.update(self._per_sequence(item, maps, predicted, stem))
        return entry

    def _per_sequence(
        self, item: PreparedInput, maps: np.ndarray, predicted: np.ndarray, stem: str
    ) -> dict[str, Any]:
        """Grad-CAM over each sequence's channel (model size) and each sequence's share."""
        by_sequence = write_sequence_overlays(
            item.batch, maps, self.sequences,
            lambda name, count: self._png_paths(f"saliency/{name}", stem, count),
        )  # fmt: skip
        shares = channel_shares(self.model.network, item.batch, predicted, len(self.sequences))
        return {
            "saliency_overlays_by_sequence": {
                name: [self._relative(p) for p in paths] for name, paths in by_sequence.items()
            },
            "sequence_share": {
                name: round(float(share), 4)
                for name, share in zip(self.sequences, shares.mean(axis=0), strict=True)
            },
        }

    def _volume_masks(self, item: PreparedInput) -> np.ndarray:
        """A 3D model's mask of one series or NIfTI volume, on the source grid [Z, rows, cols].

        The volume is built by prepare's own functions, segmented window by window (MONAI's
        sliding_window_inference) and resampled back (nearest) onto the source's voxels.
        """
        if item.affine is None:
            raise DataFormatError(
                self.options.input / item.source.name,
                "a 3D model needs the slices' geometry (position, orientation, spacing)",
            )
        if item.source.kind == "nifti":
            case = NiftiCase(item.source.name, item.source.files[0], None)
            image, _, affine = read_volume_case(case)
            volume = nifti_volume(image, None, affine, self.config)
        else:  # DICOM: prepare's 2D steps (already in item.batch), then stacked as prepare does
            rows, cols = item.display.shape[1:]
            volume = series_volume(
                item.batch[:, 0], None, item.affine, (rows, cols), item.spacing, self.config
            )
        logits = predict_volume(self.model.network, torch.from_numpy(volume.image)[None, None])
        cube = logits.argmax(dim=1)[0].numpy()
        slices, rows, cols = item.display.shape
        on_source = to_source_grid(cube, volume.affine, item.affine, (cols, rows, slices))
        return on_source.transpose(2, 1, 0)

    def segment(self, item: PreparedInput, stem: str) -> dict[str, Any]:
        """NIfTI mask, DICOM SEG (DICOM input) and overlays of one input; its summary entry."""
        if self.model.task == "segmentation-3d":
            masks = self._volume_masks(item)
        else:
            probs = _probabilities(self.model, item.batch, self.options.batch_size)
            small = probs.argmax(axis=1).astype(np.uint8)
            if item.to_source is not None:  # a registered study: back through its alignment
                masks = item.to_source(small)
            else:
                masks = to_source_size(
                    small, item.display.shape[1:], item.spacing, self.target_spacing, nearest=True
                )
        names = self.model.output_names
        pixels = np.bincount(masks.ravel(), minlength=len(names))
        entry: dict[str, Any] = {
            "foreground_pixels": {n: int(c) for n, c in zip(names[1:], pixels[1:], strict=True)},
            "slices_with_foreground": int((masks.reshape(len(masks), -1) > 0).any(axis=1).sum()),
        }
        nifti = write_nifti_mask(masks, item.affine, self.options.out / "masks" / f"{stem}.nii.gz")
        entry["mask_nifti"] = self._relative(nifti)
        if item.affine is None:
            entry.setdefault("notes", []).append("geometry unknown: the NIfTI mask has 1 mm voxels")
        if item.source.kind == "dicom":
            try:
                seg = write_dicom_seg(
                    item.dicom_files,
                    masks,
                    names,
                    self.options.out / "dicom_seg" / f"{stem}.dcm",
                    algorithm_name=f"medfed {self.model.model_name}",
                    algorithm_version=f"{_package_version()} round {self.model.round_number}",
                )
                entry["dicom_seg"] = self._relative(seg)
            except SegWriteError as exc:
                entry.setdefault("notes", []).append(f"DICOM SEG not written: {exc}")
        if not pixels[1:].any():
            entry.setdefault("notes", []).append(
                "no foreground predicted: the mask is empty (the DICOM SEG, if any, holds an "
                "empty frame per source image)"
            )
        if self.options.masks is not None:
            self._compare(item, masks, small, entry)
        paths = self._png_paths("overlays", stem, len(masks))
        for image, mask, path in zip(item.display, masks, paths, strict=True):
            write_png(mask_overlay(image, mask), path)
        entry["overlays"] = [self._relative(p) for p in paths]
        return entry

    def _compare(
        self, item: PreparedInput, masks: np.ndarray, small: np.ndarray, entry: dict[str, Any]
    ) -> None:
        """Score a 2D input's prediction against its own mask (``--masks``), in ``entry``."""
        assert self.options.masks is not None
        if item.source.kind == "dicom" or len(masks) != 1:
            entry.setdefault("notes", []).append("not compared: --masks scores 2D images only")
            return
        try:
            entry["compared_with_mask"] = compare_with_mask(
                self.options.masks, Path(item.source.name).name, masks, small,
                item.spacing, self.target_spacing, self.model.output_names,
            )  # fmt: skip
        except DataFormatError as exc:
            entry.setdefault("notes", []).append(f"not compared: {exc}")

    def __call__(self, item: PreparedInput) -> dict[str, Any]:
        stem = self.stems(item.source.name)
        entry: dict[str, Any] = {
            "input": item.source.name,
            "kind": item.source.kind,
            "images": len(item.batch),
        }
        run = self.classify if self.model.task == "classification" else self.segment
        entry.update(run(item, stem))
        return entry

    def close(self) -> None:
        """Close predictions.csv."""
        if self.csv is not None:
            self.csv.close()


def _package_version() -> str:
    try:
        return version("medfed")
    except PackageNotFoundError:
        return "0"


def _preprocessing(model: TrainedModel, config: PreprocessingConfig) -> dict[str, Any]:
    """What summary.json says about the preprocessing: the contract, or the options used."""
    if model.preprocessing is not None:
        return {"from": "model", **model.preprocessing.model_dump(mode="json")}
    return {
        "from": "options (the model carries no preprocessing contract)",
        "window": config.window,
        "ct_window": config.ct_window,
        "spacing_mm": config.target_spacing,
    }


def _write_summary(
    options: PredictOptions,
    model: TrainedModel,
    config: PreprocessingConfig,
    entries: list[dict[str, Any]],
    skipped: list[Skipped],
) -> Path:
    """summary.json: the model, the preprocessing, what was written per input, what was skipped."""
    summary = {
        "checkpoint": str(options.model),
        "task": model.task,
        "network": model.model_name,
        "round": model.round_number,
        "image_size": model.size,
        "outputs": list(model.output_names),
        **({"decision": decision(model)} if model.task == "classification" else {}),
        "preprocessing": _preprocessing(model, config),
        "predictions_csv": CSV_NAME if model.task == "classification" else None,
        "inputs": entries,
        **({"compared_with_masks": mean_comparison(entries)} if options.masks else {}),
        "skipped": [{"input": s.input, "reason": s.reason} for s in skipped],
    }
    path = options.out / SUMMARY_NAME
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return path


def _read_one(
    source: Source,
    root: Path,
    config: PreprocessingConfig,
    model: TrainedModel,
    studies: StudyReplay | None,
) -> PreparedInput:
    """One input that is not aligned by study, with as many channels as the network takes.

    Raises:
        DataFormatError: it cannot be read, the model's data were registered (only DICOM
            series are), or its channels are not the network's.
    """
    if studies is not None and studies.contract.registration != "none":
        raise DataFormatError(
            root / source.name,
            f"the model's data were registered ({studies.contract.registration}): predict "
            "registers DICOM series only, as prepare does",
        )
    item = read_input(source, root, config)
    if item.batch.shape[1] != model.in_channels:
        raise DataFormatError(
            root / source.name,
            f"{item.batch.shape[1]} channel(s); the model takes {model.in_channels} "
            f"({studies.contract.channel_names if studies else 'grey'})",
        )
    return item


def run_predict(options: PredictOptions, console: Console) -> dict[str, Any]:
    """Predict on every input under ``options.input``; returns what summary.json holds.

    Inputs that cannot be read are skipped and listed; the others are still predicted.

    Raises:
        DataFormatError: The checkpoint cannot be used, a single input file cannot be read, or
            nothing under the input folder can be (summary.json lists why).
        ConfigError: The checkpoint's job configuration is invalid, or an option disagrees
            with the model's preprocessing contract.
    """
    model = load_trained_model(options.model)
    config = replay_preprocessing(model, options.preprocessing, str(options.model))
    studies = study_replay(model.preprocessing, options.sequences, options.reference)
    options.out.mkdir(parents=True, exist_ok=True)
    single_file = options.input.is_file()
    entries: list[dict[str, Any]] = []
    predictor = _Predictor(model, options, config)
    try:
        with Progress(*_COLUMNS, console=console, transient=True) as progress:
            scanning = progress.add_task("scan inputs", total=None)
            found = find_sources(
                options.input,
                exclude=options.out,
                on_file=lambda done, total: progress.update(scanning, completed=done, total=total),
            )
            skipped = list(found.skipped)
            sources = found.sources
            if studies is not None:  # registered or stacked sequences: DICOM by study
                dicom = [s for s in sources if s.kind == "dicom"]
                sources = [s for s in sources if s.kind != "dicom"]
                if dicom:
                    aligning = progress.add_task("align and predict studies", total=None)
                    for study in read_studies(
                        dicom, found.root, config, studies.for_dicom(),
                        segmentation=model.task != "classification",
                    ):  # fmt: skip
                        if isinstance(study, Skipped):
                            skipped.append(study)
                        else:
                            entries.append(predictor(study.item))
                        progress.advance(aligning)
            predicting = progress.add_task("predict", total=len(sources))
            for source in sources:
                try:
                    item = _read_one(source, found.root, config, model, studies)
                except NoDecodableImage as exc:  # each of its files, with its own reason
                    if single_file:
                        raise
                    skipped += exc.skipped
                except DataFormatError as exc:
                    if single_file:
                        raise
                    skipped.append(Skipped(source.name, exc.reason))
                else:
                    skipped += item.skipped
                    entries.append(predictor(item))
                progress.advance(predicting)
    finally:
        predictor.close()
    summary_path = _write_summary(options, model, config, entries, skipped)
    if not entries:
        raise DataFormatError(
            options.input,
            f"no readable image among the inputs ({len(skipped)} skipped; see {summary_path})",
        )
    logger.debug("predicted %d inputs, skipped %d files", len(entries), len(skipped))
    return json.loads(summary_path.read_text(encoding="utf-8"))
