"""Patient-level DP-SGD: the accountant per patient, one patient's bounded influence, the cap."""

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from torch import nn

from common.config import ModelConfig, PrivacyConfig
from common.errors import ConfigError
from common.models import build_model
from common.privacy.accounting import RDP_ORDERS
from common.privacy.patient_dp import (
    PatientPrivacyEngine,
    clipped_patient_sum,
    wrap_for_per_sample_gradients,
)
from common.privacy.patient_sampling import PatientSampling


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig(name="cnn"), 1, 2, (16, 16), dp_enabled=True)


def _patients(sizes: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    patients = np.repeat(np.arange(len(sizes)), sizes)
    images = torch.from_numpy(rng.random((len(patients), 1, 16, 16), dtype=np.float32))
    targets = torch.from_numpy(rng.integers(0, 2, len(patients)))
    return images, targets, patients


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.flatten() for t in tensors])


def test_epsilon_is_opacus_accountant_at_the_patient_sample_rate():
    config = PrivacyConfig(target_epsilon=4.0, target_delta=1e-4, max_grad_norm=1.0)
    images, targets, patients = _patients([1, 3, 5, 8] * 10)  # 40 patients, 170 images
    sampling = PatientSampling.plan(patients, batch_size=34, max_images_per_patient=16)
    assert sampling.expected_patients == 8 and sampling.sample_rate == pytest.approx(8 / 40)
    planned = 3 * sampling.steps_per_epoch
    engine = PatientPrivacyEngine(config, sampling, planned_steps=planned)
    noise = get_noise_multiplier(target_epsilon=4.0, target_delta=1e-4, sample_rate=0.2,
                                 steps=planned, accountant="rdp", alphas=RDP_ORDERS)  # fmt: skip
    assert engine.noise_multiplier == pytest.approx(noise)
    model = wrap_for_per_sample_gradients(_model(), "hooks")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    criterion = nn.CrossEntropyLoss()
    for step in range(1, planned + 1):
        engine.step(model, criterion, images, targets, optimizer)
        if step not in (1, planned):  # each conversion takes 0.3 s
            continue
        accountant = RDPAccountant()
        accountant.history = [(noise, 0.2, step)]
        assert engine.epsilon() == pytest.approx(accountant.get_epsilon(1e-4, alphas=RDP_ORDERS))
    assert engine.epsilon() == pytest.approx(4.0, rel=0.02) and engine.epsilon() <= 4.04
    state = engine.export_state()
    assert state.unit == "patient" and state.history == [(noise, 0.2, planned)]


def test_one_patient_moves_the_noiseless_clipped_sum_by_at_most_max_grad_norm():
    """Add/remove adjacency (what Opacus' accountant assumes): one patient, whatever its images,
    moves the clipped sum by at most C; replacing its images therefore by at most 2 C."""
    max_grad_norm = 0.05  # below every patient's gradient norm: all are clipped
    images, targets, patients = _patients([6, 2, 3, 1, 4])
    owners = torch.from_numpy(patients)
    replaced, replaced_targets = images.clone(), targets.clone()
    victim = owners == 0  # all 6 images of patient 0 replaced by arbitrary ones
    replaced[victim] = torch.rand((int(victim.sum()), 1, 16, 16)) * 5 - 2
    replaced_targets[victim] = 1 - targets[victim]
    model = wrap_for_per_sample_gradients(_model(), "hooks")
    criterion = nn.CrossEntropyLoss()

    def total(x: torch.Tensor, y: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        n = int(groups.max()) + 1 if len(groups) else 0
        return _flat(clipped_patient_sum(model, criterion, x, y, groups, n, max_grad_norm)[0])

    def distance(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(torch.linalg.vector_norm(a - b))

    others = ~victim
    without = total(images[others], targets[others], owners[others] - 1)
    original = total(images, targets, owners)
    swapped = total(replaced, replaced_targets, owners)
    bound = max_grad_norm * (1 + 1e-4)
    assert 0.9 * max_grad_norm < distance(original, without) <= bound
    assert 0.9 * max_grad_norm < distance(swapped, without) <= bound
    assert distance(original, swapped) <= 2 * bound
    # Clipping per image instead: the 6 images of the patient move the sum by more than C.
    per_image = torch.arange(len(targets))
    per_image_without = total(images[others], targets[others], torch.arange(int(others.sum())))
    assert distance(total(images, targets, per_image), per_image_without) > 1.5 * max_grad_norm


def test_a_patient_gradient_is_the_sum_of_its_images_gradients():
    images, targets, patients = _patients([3, 2])
    plain = _model(1)
    nn.CrossEntropyLoss(reduction="sum")(plain(images[:3]), targets[:3]).backward()
    expected = _flat([p.grad for p in plain.parameters()])
    model = wrap_for_per_sample_gradients(_model(1), "hooks")
    sums, _ = clipped_patient_sum(model, nn.CrossEntropyLoss(), images, targets,
                                  torch.from_numpy(patients), 2, max_grad_norm=1e6)  # fmt: skip
    second = _model(1)
    nn.CrossEntropyLoss(reduction="sum")(second(images[3:]), targets[3:]).backward()
    expected = expected + _flat([p.grad for p in second.parameters()])
    assert torch.allclose(_flat(sums), expected, atol=1e-5)
    # Per-image gradients taken 2 images at a time (a patient split across chunks): the same.
    owners = torch.from_numpy(patients)
    chunked, _ = clipped_patient_sum(
        model, nn.CrossEntropyLoss(), images, targets, owners, 2, 1e6, chunk_images=2
    )
    assert torch.allclose(_flat(chunked), expected, atol=1e-5)


def test_a_step_uses_at_most_the_cap_of_a_patients_images():
    patients = np.repeat(np.arange(10), [40] + [4] * 9)  # patient 0 has 40 images, 16 per step
    # 26 images per step / (52 usable images / 10 patients) = 5 patients per step
    sampling = PatientSampling.plan(patients, batch_size=26, max_images_per_patient=16)
    assert sampling.capped_patients == 1 and sampling.expected_patients == 5
    generator = torch.Generator().manual_seed(0)
    draws = [sampling.draw(generator) for _ in range(400)]
    used = [d for draw in draws for d in draw]
    assert max(len(d) for d in used) == 16
    assert all(np.isin(d, sampling.images_of[patients[d[0]]]).all() for d in used)
    assert np.mean([len(draw) for draw in draws]) == pytest.approx(5, rel=0.1)  # Poisson, q=0.5


def test_a_site_smaller_than_one_expected_step_is_refused():
    with pytest.raises(ConfigError, match="train.batch_size.*only 3 .*12 images"):
        PatientSampling.plan(np.repeat(np.arange(3), 4), batch_size=32, max_images_per_patient=16)
