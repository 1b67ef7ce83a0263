"""Poisson sampling of patients for patient-level DP-SGD, with a cap on images per patient."""

from dataclasses import dataclass

import numpy as np
import torch

from common.errors import ConfigError

__all__ = ["PatientSampling"]


@dataclass(frozen=True)
class PatientSampling:
    """How many patients one step expects, out of how many, and each patient's images.

    The job's ``batch_size`` counts images; a step expects ``max(1, round(batch_size / mean
    images a patient brings to a step))`` patients (a patient brings its images up to the
    cap), so that a step holds about ``batch_size`` images; each patient is drawn with probability
    ``sample_rate = expected_patients / num_patients`` (Poisson sampling, which the accountant's
    subsampling amplification assumes). An epoch is ``round(1 / sample_rate)`` steps.
    """

    #: Image indices of each patient (patient k's images are ``images_of[k]``).
    images_of: tuple[np.ndarray, ...]
    expected_patients: int
    max_images_per_patient: int

    @classmethod
    def plan(
        cls, patients: np.ndarray, batch_size: int, max_images_per_patient: int
    ) -> "PatientSampling":
        """Sampling for images grouped by ``patients`` (an id per image).

        Raises:
            ConfigError: the site has fewer patients than one expected step needs (its whole
                training set is smaller than ``batch_size``): there would be no sampling to
                amplify privacy; the message says what to lower.
        """
        _, inverse = np.unique(np.asarray(patients), return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse))[:-1]
        images_of = tuple(np.split(order.astype(np.int64), bounds))
        num_patients, num_images = len(images_of), len(inverse)
        if num_patients == 0:
            raise ConfigError("privacy.unit", "patient-level DP-SGD needs at least one patient")
        usable = int(np.minimum(np.bincount(inverse), max_images_per_patient).sum())
        expected = max(1, round(batch_size * num_patients / usable))
        if expected > num_patients:
            raise ConfigError(
                "train.batch_size",
                f"{batch_size} images per step expects {expected} patients, but the site has "
                f"only {num_patients} ({num_images} images): lower train.batch_size below "
                f"{num_images}",
            )
        return cls(images_of, expected, max_images_per_patient)

    @property
    def num_patients(self) -> int:
        """Patients in the site's training set."""
        return len(self.images_of)

    @property
    def sample_rate(self) -> float:
        """Probability that a patient takes part in a step."""
        return self.expected_patients / self.num_patients

    @property
    def steps_per_epoch(self) -> int:
        """Steps that visit each patient once in expectation."""
        return max(1, round(self.num_patients / self.expected_patients))

    @property
    def capped_patients(self) -> int:
        """Patients with more images than the cap: each step uses a random cap-sized subset."""
        return sum(len(images) > self.max_images_per_patient for images in self.images_of)

    def draw(self, generator: torch.Generator | None = None) -> list[np.ndarray]:
        """One step's patients (Poisson) and, for each, its images (at most the cap, at random)."""
        chosen = torch.rand(self.num_patients, generator=generator) < self.sample_rate
        drawn = []
        for k in torch.nonzero(chosen).flatten().tolist():
            images = self.images_of[k]
            if len(images) > self.max_images_per_patient:
                keep = torch.randperm(len(images), generator=generator)
                images = np.sort(images[keep[: self.max_images_per_patient].numpy()])
            drawn.append(images)
        return drawn
