import pytest
import torch
from torch import nn

from common.config import ModelConfig
from common.errors import ConfigError, ModelNotPrivacyCompatibleError
from common.federation_job import FederationJob
from common.models import build_model, check_privacy_compatible


@pytest.mark.parametrize("norm", ["group", "instance"])
def test_cnn_builds_for_dp_and_predicts_each_class(norm: str) -> None:
    model = build_model(ModelConfig(name="cnn", norm=norm), 1, 3, (28, 28), dp_enabled=True)
    assert model(torch.zeros(4, 1, 28, 28)).shape == (4, 3)


def test_batch_norm_is_rejected_under_dp_with_the_layer_named() -> None:
    with pytest.raises(ModelNotPrivacyCompatibleError) as err:
        build_model(ModelConfig(name="cnn", norm="batch"), 1, 2, (28, 28), dp_enabled=True)
    message = str(err.value)
    assert "net.layer_0.conv.unit0.adn.N: BatchNorm2d mixes the samples" in message
    assert "norm='group'" in message and len(message) < 1000


def test_batch_norm_is_allowed_without_dp() -> None:
    model = build_model(ModelConfig(name="cnn", norm="batch"), 1, 2, (28, 28), dp_enabled=False)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_in_place_activation_is_rejected_although_opacus_validator_misses_it() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(inplace=True), nn.Flatten())
    with pytest.raises(ModelNotPrivacyCompatibleError, match=r"1: in-place activation ReLU"):
        check_privacy_compatible(model, "custom")


def test_resnet18_builds_with_group_norm_for_dp() -> None:
    """MONAI's ResNet blocks hard-code BatchNorm and in-place ReLU; the factory replaces both."""
    model = build_model(ModelConfig(name="resnet18"), 1, 2, (28, 28), dp_enabled=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not any(getattr(m, "inplace", False) for m in model.modules())
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 2)


# Every (network, norm, output count) a job can ask for, on the smallest input each accepts.
_SIDES = {
    "cnn": 16,
    "pooled-cnn": 16,
    "resnet18": 16,
    "densenet121": 64,
    "basicunet": 32,
    "unet": 16,
}
_COMBINATIONS = [
    (name, norm, outputs, dims)
    for name in _SIDES
    for norm in ("group", "instance", "batch")
    for outputs in (2, 3)
    for dims in ((2, 3) if name in ("basicunet", "unet") else (2,))
]


@pytest.mark.parametrize(("name", "norm", "outputs", "dims"), _COMBINATIONS)
def test_every_network_norm_and_output_count_builds_and_trains_or_is_refused_by_name(
    name: str, norm: str, outputs: int, dims: int
) -> None:
    config = ModelConfig(name=name, norm=norm)
    shape = (_SIDES[name],) * dims
    if norm == "batch":  # refused under DP, naming the layer; allowed without
        with pytest.raises(ModelNotPrivacyCompatibleError, match="BatchNorm"):
            build_model(config, 1, outputs, shape, dp_enabled=True)
    model = build_model(config, 1, outputs, shape, dp_enabled=norm != "batch")
    model.train()
    out = model(torch.rand(2, 1, *shape))
    expected = (2, outputs, *shape) if name in ("basicunet", "unet") else (2, outputs)
    assert out.shape == expected
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_unet_of_a_3d_job_with_default_group_norm_builds_for_one_lesion_class() -> None:
    """The reported bug: `--task segmentation-3d --model unet` keeps group norm (8 groups), and
    the top upsampling layer normalises the 2 outputs; 8 groups stay where they divide."""
    job = FederationJob(task="segmentation-3d", model={"name": "unet"}, image_size=16)
    assert job.model.norm == "group"
    model = build_model(job.model, 1, job.num_classes, job.spatial_shape, dp_enabled=True)
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    groups = {(m.num_channels, m.num_groups) for m in norms}
    assert groups == {(2, 2), (16, 8), (32, 8), (64, 8), (128, 8)}


def test_densenet_with_instance_norm_is_refused_on_images_it_reduces_to_one_pixel() -> None:
    config = ModelConfig(name="densenet121", norm="instance")
    with pytest.raises(ConfigError, match=r"at least 61 .* got \(60, 60\)"):
        build_model(config, 1, 2, (60, 60), dp_enabled=True)
    model = build_model(config, 1, 2, (61, 61), dp_enabled=True).train()
    assert model(torch.rand(2, 1, 61, 61)).shape == (2, 2)


def test_pooled_cnn_builds_for_dp_and_scores_a_lesion_the_same_wherever_it_lies() -> None:
    """Global average pooling: the head sees no position (up to the strides' border effects)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="pooled-cnn"), 1, 2, (64, 64), dp_enabled=True)
    model.eval()
    assert sum(p.numel() for p in model.final.parameters()) == 64 * 2 + 2
    images = torch.zeros(2, 1, 64, 64)
    images[0, 0, 8:16, 8:16] = 1.0  # the same blob, shifted by a multiple of the total stride
    images[1, 0, 40:48, 24:32] = 1.0
    with torch.no_grad():
        logits = model(images)
    assert logits.shape == (2, 2)
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-4, atol=1e-5)
    flattened = build_model(ModelConfig(name="cnn"), 1, 2, (64, 64), dp_enabled=False).eval()
    with torch.no_grad():
        assert not torch.allclose(*flattened(images), atol=1e-3)  # the cnn's head is positional
