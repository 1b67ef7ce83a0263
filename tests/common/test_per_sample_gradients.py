"""medfed's DP-SGD step against Opacus' own, on the networks the jobs build."""

import numpy as np
import pytest
import torch
from opacus import GradSampleModule, PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from common.config import ModelConfig, PrivacyConfig
from common.models import build_model
from common.privacy.accounting import PrivacyState
from common.privacy.ghost_clipping import clipped_gradient_sum, uses_ghost_norm
from common.privacy.image_dp import SitePrivacyEngine
from common.privacy.patient_dp import clipped_patient_sum
from common.privacy.per_sample_gradients import (
    backward_to_outputs,
    clip_and_sum,
    fast_path_blockers,
    per_sample_gradients,
)
from common.tasks import segmentation


def _cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig(name="cnn"), 1, 2, (16, 16), dp_enabled=True)


def _images(count: int, side: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand((count, 1, side, side), generator=generator)
    return images, torch.randint(0, 2, (count,), generator=generator)


@pytest.mark.parametrize("network", ["cnn", "pooled-cnn", "basicunet"])
def test_per_sample_gradients_are_opacus_per_sample_gradients(network):
    """CNN: GroupNorm, Linear and convolutions on small maps (unfold); BasicUNet on 32x32:
    convolutions on maps of 1024 positions (grouped convolution) down to 4."""
    if network == "cnn":
        model, (images, targets), criterion = _cnn(), _images(6), nn.CrossEntropyLoss()
    elif network == "pooled-cnn":
        torch.manual_seed(0)
        model = build_model(ModelConfig(name="pooled-cnn"), 1, 2, (16, 16), dp_enabled=True)
        (images, targets), criterion = _images(6), nn.CrossEntropyLoss()
    else:
        torch.manual_seed(0)
        config = ModelConfig(name="basicunet", norm="instance")
        model = build_model(config, 1, 2, (32, 32), dp_enabled=True)
        images, _ = _images(2, side=32)
        targets = (images[:, 0] > 0.7).long()
        criterion = segmentation.criterion()
    assert fast_path_blockers(model) == []
    ours, loss = per_sample_gradients(model, criterion, images, targets)
    reference = GradSampleModule(model, loss_reduction="mean")
    theirs, their_loss = per_sample_gradients(reference, criterion, images, targets)
    reference.to_standard_module()
    assert loss == pytest.approx(their_loss, rel=1e-5)
    assert len(ours) == len(theirs) == len(list(model.parameters()))
    for mine, opacus in zip(ours, theirs, strict=True):
        assert mine.shape == opacus.shape and mine.shape[0] == len(targets)
        assert torch.allclose(mine, opacus, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("noise_multiplier", [0.0, 1.3])
def test_a_private_step_is_opacus_dp_sgd_step(noise_multiplier):
    """Same batch, same seed before the step: the same clipped, noised, scaled update as
    Opacus' PrivacyEngine (its DPOptimizer), and the same accountant entry."""
    images, targets = _images(60)
    max_grad_norm = 0.05  # below most per-sample norms: the clipping matters
    criterion = nn.CrossEntropyLoss()
    reference = _cnn()
    engine = PrivacyEngine(accountant="rdp")
    private, optimizer, loader = engine.make_private(
        module=reference,
        optimizer=torch.optim.SGD(reference.parameters(), lr=0.5),
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

    ours = _cnn()
    config = PrivacyConfig(max_grad_norm=max_grad_norm, accountant="rdp")
    state = PrivacyState(noise_multiplier=noise_multiplier, sample_rate=1 / 6, unit="image")
    site = SitePrivacyEngine(config, num_samples=60, batch_size=10, planned_epochs=1, state=state)
    torch.manual_seed(2)
    site.apply_step(
        ours, criterion, batch, batch_targets, torch.optim.SGD(ours.parameters(), lr=0.5)
    )

    start = _cnn()
    for after, theirs, before in zip(
        ours.parameters(), reference.parameters(), start.parameters(), strict=True
    ):
        assert torch.allclose(after, theirs, atol=1e-6)
        assert noise_multiplier == 0 or not torch.allclose(after, before)
    assert site.export_state().history == [(noise_multiplier, 1 / 6, 1)]
    assert engine.accountant.history == [(noise_multiplier, 1 / 6, 1)]


def test_an_epoch_draws_images_as_opacus_poisson_loader():
    """int(1 / q) steps per epoch, each image drawn with probability q (Poisson)."""
    config = PrivacyConfig()
    state = PrivacyState(noise_multiplier=1.0, sample_rate=0.1, unit="image")
    site = SitePrivacyEngine(config, num_samples=200, batch_size=20, planned_epochs=1, state=state)
    assert site.steps_per_epoch == 10
    images, targets = _images(200)
    model = _cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(0)
    used = [
        site.step(model, nn.CrossEntropyLoss(), images, targets, optimizer, generator)[1]
        for _ in range(10)
    ]
    assert np.mean(used) == pytest.approx(20, rel=0.25) and len(set(used)) > 3
    assert site.export_state().history == [(1.0, 0.1, 10)]


def test_patient_sums_match_opacus_per_sample_gradients():
    images, targets = _images(9)
    owners = torch.tensor([0, 0, 0, 1, 2, 2, 3, 3, 3])
    model = _cnn()
    ours, _ = clipped_patient_sum(model, nn.CrossEntropyLoss(), images, targets, owners, 4, 0.1)
    wrapped = GradSampleModule(model, loss_reduction="mean")
    theirs, _ = clipped_patient_sum(wrapped, nn.CrossEntropyLoss(), images, targets, owners, 4, 0.1)
    wrapped.to_standard_module()
    for mine, opacus in zip(ours, theirs, strict=True):
        assert torch.allclose(mine, opacus, atol=1e-6)


def test_networks_with_other_trainable_layers_are_named():
    """Those keep Opacus' GradSampleModule (common.local_training)."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.PReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 2))
    assert fast_path_blockers(model) == ["1: PReLU"]
    unet = build_model(ModelConfig(name="unet", norm="instance"), 1, 2, (16, 16), dp_enabled=True)
    assert any("ConvTranspose2d" in blocker for blocker in fast_path_blockers(unet))


@pytest.mark.parametrize(("network", "side"), [("cnn", 16), ("cnn", 28), ("basicunet", 32)])
@pytest.mark.parametrize("max_grad_norm", [0.05, 1e3])
def test_mixed_ghost_clipping_is_the_clipped_sum_of_per_sample_gradients(
    network, side, max_grad_norm
):
    """Ghost norms (the CNN's 4x4 and smaller maps, its Linear; the U-Net's bottom) and
    materialised per-sample gradients give the clipped sum of the per-sample gradients that
    Opacus' clipping arithmetic gives (clipping active at 0.05, inactive at 1e3)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=network), 1, 2, (side, side), dp_enabled=True)
    images, targets = _images(5, side=side)
    criterion = nn.CrossEntropyLoss()
    if network == "basicunet":
        targets, criterion = (images[:, 0] > 0.7).long(), segmentation.criterion()
    layers, _ = backward_to_outputs(model, criterion, images, targets)
    ghosts = [type(m).__name__ for m, i, g in layers if uses_ghost_norm(m, i, g)]
    assert "Linear" in ghosts or network == "basicunet"
    assert "Conv2d" in ghosts  # a convolution's norm is a ghost norm: the path is exercised
    ours, loss = clipped_gradient_sum(model, criterion, images, targets, max_grad_norm)
    grads, their_loss = per_sample_gradients(model, criterion, images, targets)
    assert loss == pytest.approx(their_loss, rel=1e-6)
    for mine, reference in zip(ours, clip_and_sum(grads, max_grad_norm), strict=True):
        assert mine.shape == reference.shape
        assert torch.allclose(mine, reference, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("frozen", ["all but the head", "one residual weight, not its bias"])
def test_frozen_parameters_are_neither_clipped_nor_returned(frozen):
    """A "train only the head" job freezes parameters (requires_grad False): the clipped sum
    covers the trainable ones only, and a sample's norm is over those alone."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="cnn"), 1, 2, (28, 28), dp_enabled=True)
    for name, param in model.named_parameters():
        if frozen == "all but the head":
            param.requires_grad_(name.startswith("final."))
        else:
            param.requires_grad_(name != "net.layer_2.residual.weight")
    trainable = [p for p in model.parameters() if p.requires_grad]
    images, targets = _images(7, side=28)
    criterion = nn.CrossEntropyLoss()
    ours, _ = clipped_gradient_sum(model, criterion, images, targets, 0.05)
    grads, _ = per_sample_gradients(model, criterion, images, targets)
    assert len(ours) == len(grads) == len(trainable)
    for mine, reference, param in zip(ours, clip_and_sum(grads, 0.05), trainable, strict=True):
        assert mine.shape == param.shape
        assert torch.allclose(mine, reference, rtol=1e-4, atol=1e-6)


def test_an_engine_keeps_the_layers_of_the_model_it_steps():
    """The engine looks a model's trainable layers up once for its round: several steps on one
    model, then a step on another, equal the same steps each taken by a fresh engine."""
    images, targets = _images(40)
    criterion = nn.CrossEntropyLoss()
    config = PrivacyConfig(max_grad_norm=0.05)
    state = PrivacyState(noise_multiplier=0.7, sample_rate=0.25, unit="image")

    def engine() -> SitePrivacyEngine:
        return SitePrivacyEngine(
            config, num_samples=40, batch_size=10, planned_epochs=1, state=state
        )

    kept, models, fresh = engine(), [_cnn(), _cnn(1)], [_cnn(), _cnn(1)]
    for step, which in enumerate([0, 0, 0, 1]):
        batch = slice(step * 10, step * 10 + 10)
        for site, model in ((kept, models[which]), (engine(), fresh[which])):
            torch.manual_seed(step)
            site.apply_step(
                model,
                criterion,
                images[batch],
                targets[batch],
                torch.optim.SGD(model.parameters(), lr=0.5),
            )
    for mine, reference in zip(models, fresh, strict=True):
        for after, expected in zip(mine.parameters(), reference.parameters(), strict=True):
            assert torch.equal(after, expected)
    assert not torch.equal(next(models[0].parameters()), next(_cnn().parameters()))
    assert kept.export_state().history == [(0.7, 0.25, 4)]
