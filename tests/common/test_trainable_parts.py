"""train.trainable: only a network's head (or last block) trains, is clipped and is noised."""

import numpy as np
import pytest
import torch
from opacus import GradSampleModule, PrivacyEngine
from pydantic import ValidationError
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from common.config import (
    CLASSIFICATION_MODELS,
    SEGMENTATION_MODELS,
    TRAINABLE_PARTS,
    ModelConfig,
    PrivacyConfig,
)
from common.data.arrays import ImageArrays
from common.errors import ConfigError
from common.federation_job import FederationJob
from common.local_training import train_local_round
from common.models import build_model, count_parameters, freeze_all_but
from common.privacy.accounting import PrivacyState
from common.privacy.image_dp import SitePrivacyEngine
from common.privacy.patient_dp import clipped_patient_sum


def _pooled_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig(name="pooled-cnn"), 1, 2, (16, 16), dp_enabled=True)


def _images(count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand((count, 1, 16, 16), generator=generator)
    return images, torch.randint(0, 2, (count,), generator=generator)


@pytest.mark.parametrize("network", [*CLASSIFICATION_MODELS, *SEGMENTATION_MODELS])
def test_every_network_defines_a_head_and_a_last_block_of_its_own_parameters(network):
    side = 64 if network in ("densenet121", "resnet18") else 32
    norm = "instance" if network in SEGMENTATION_MODELS else "group"
    model = build_model(ModelConfig(name=network, norm=norm), 1, 2, (side, side), True)
    total = count_parameters(model)
    head = freeze_all_but(model, network, "head")
    head_names = {n for n, p in model.named_parameters() if p.requires_grad}
    block = freeze_all_but(model, network, "last-block")
    block_names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert 0 < head < block < total and count_parameters(model) == block
    assert head_names < block_names
    for prefix in TRAINABLE_PARTS[network]["last-block"]:
        assert any(name.startswith(prefix) for name in block_names), prefix
    assert freeze_all_but(model, network, "all") == total


def test_pooled_cnn_head_is_its_output_layer():
    model = _pooled_cnn()
    assert freeze_all_but(model, "pooled-cnn", "head") == 64 * 2 + 2
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        "final.weight",
        "final.bias",
    ]


def test_a_part_a_network_lacks_is_refused_by_name():
    with pytest.raises(ConfigError, match="'head' is not defined for model 'mlp'"):
        freeze_all_but(nn.Linear(2, 2), "mlp", "head")
    job = FederationJob(train={"trainable": "head"}, model={"name": "densenet121"})
    assert job.to_flat()["train.trainable"] == "head"
    with pytest.raises(ValidationError, match="trainable"):
        FederationJob(train={"trainable": "middle"})


@pytest.mark.parametrize("noise_multiplier", [0.0, 1.3])
def test_a_private_step_on_the_last_block_is_opacus_step_and_leaves_the_rest(noise_multiplier):
    """The clipped, noised, scaled update of Opacus' PrivacyEngine on the same frozen network:
    equal on the trained parameters (convolutions, group norm and the head), none elsewhere."""
    images, targets = _images(60)
    max_grad_norm = 0.05  # below most per-sample norms: the clipping matters
    criterion = nn.CrossEntropyLoss()
    reference = _pooled_cnn()
    freeze_all_but(reference, "pooled-cnn", "last-block")
    engine = PrivacyEngine(accountant="rdp")
    private, optimizer, loader = engine.make_private(
        module=reference,
        optimizer=torch.optim.SGD([p for p in reference.parameters() if p.requires_grad], lr=0.5),
        data_loader=DataLoader(TensorDataset(images, targets), batch_size=10),
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        poisson_sampling=True,
    )
    torch.manual_seed(1)
    batch, batch_targets = next(iter(loader))
    assert 0 < len(batch_targets) < 60
    criterion(private(batch), batch_targets).backward()
    torch.manual_seed(2)
    optimizer.step()

    ours = _pooled_cnn()
    freeze_all_but(ours, "pooled-cnn", "last-block")
    config = PrivacyConfig(max_grad_norm=max_grad_norm, accountant="rdp")
    state = PrivacyState(noise_multiplier=noise_multiplier, sample_rate=1 / 6, unit="image")
    site = SitePrivacyEngine(config, num_samples=60, batch_size=10, planned_epochs=1, state=state)
    torch.manual_seed(2)
    trained = [p for p in ours.parameters() if p.requires_grad]
    site.apply_step(ours, criterion, batch, batch_targets, torch.optim.SGD(trained, lr=0.5))

    start = _pooled_cnn()
    moved = []
    for (name, after), theirs, before in zip(
        ours.named_parameters(), reference.parameters(), start.parameters(), strict=True
    ):
        assert torch.allclose(after, theirs, atol=1e-6), name
        if not torch.equal(after, before):
            moved.append(name)
            assert after.requires_grad, name
    assert moved and all(n.startswith(("features.layer_2.", "final.")) for n in moved)
    assert noise_multiplier == 0 or len(moved) == len(trained)


def test_patient_sums_of_a_frozen_network_match_opacus_and_cover_the_head_only():
    images, targets = _images(9)
    owners = torch.tensor([0, 0, 0, 1, 2, 2, 3, 3, 3])
    model = _pooled_cnn()
    freeze_all_but(model, "pooled-cnn", "head")
    ours, _ = clipped_patient_sum(model, nn.CrossEntropyLoss(), images, targets, owners, 4, 0.1)
    wrapped = GradSampleModule(model, loss_reduction="mean")
    theirs, _ = clipped_patient_sum(wrapped, nn.CrossEntropyLoss(), images, targets, owners, 4, 0.1)
    wrapped.to_standard_module()
    assert [t.shape for t in ours] == [torch.Size([2, 64]), torch.Size([2])]
    for mine, opacus in zip(ours, theirs, strict=True):
        assert torch.allclose(mine, opacus, atol=1e-6)


@pytest.mark.parametrize("unit", ["patient", "image"])
def test_a_dp_round_training_the_head_changes_only_the_head(unit):
    """Frozen parameters' delta is zero; the head moves; epsilon is that of the same plan."""
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(40), 3)
    data = ImageArrays(
        images=rng.random((120, 1, 16, 16), dtype=np.float32),
        labels=rng.integers(0, 2, 120),
        patients=patients,
    )
    job = FederationJob(
        rounds=2,
        image_size=16,
        model={"name": "pooled-cnn"},
        train={"trainable": "head", "batch_size": 24, "learning_rate": 0.05},
        privacy={"unit": unit},
    )
    model = _pooled_cnn()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    update = train_local_round(model, data, job, seed=0, privacy_state=None)
    changed = {k for k, v in update.state_dict.items() if not torch.equal(v, start[k])}
    assert changed == {"final.weight", "final.bias"}
    assert update.privacy_unit == unit and 0 < update.epsilon < 8
