import pytest
import torch
from torch import nn

from common.config import ModelConfig
from common.errors import ModelNotPrivacyCompatibleError
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
