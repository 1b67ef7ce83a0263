"""Model factory: MONAI networks, checked at build time for DP-SGD (Opacus) compatibility."""

import logging
import math

from monai.networks.layers import Norm
from monai.networks.nets import BasicUNet, Classifier, DenseNet121, ResNet, UNet
from opacus.validators import ModuleValidator
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from common.config import TRAINABLE_PARTS, ModelConfig
from common.errors import ConfigError, ModelNotPrivacyCompatibleError
from common.pooled_classifier import PooledClassifier

__all__ = [
    "build_model",
    "check_privacy_compatible",
    "count_parameters",
    "freeze_all_but",
    "grad_sample_mode",
    "group_norm",
    "halvings",
    "halvings_of",
]

logger = logging.getLogger(__name__)


#: MONAI norm factory name of :func:`group_norm` (registered below).
_GROUP_NORM = "medfed_group"


def group_norm(num_channels: int, num_groups: int = 8) -> nn.GroupNorm:
    """Group norm over ``num_channels`` in ``gcd(num_groups, num_channels)`` groups.

    ``nn.GroupNorm`` refuses a channel count its group count does not divide, and a MONAI
    network passes one norm setting to every layer: UNet's top upsampling layer normalises the
    output classes (2 for one lesion class), which 8 groups do not divide. Layers whose channels
    the requested groups divide keep exactly those groups (so weights and checkpoints are
    unchanged); the others get the largest group count that divides both (2 classes: 2 groups,
    3 classes: 1 group, i.e. layer norm over the channels). The module is a plain
    ``nn.GroupNorm``, which Opacus computes per-sample gradients for.
    """
    return nn.GroupNorm(math.gcd(num_groups, num_channels), num_channels)


# A MONAI layer factory returns a constructor for a spatial dimension; group norm has one for all.
if _GROUP_NORM.upper() not in Norm.names:
    Norm.add_factory_callable(_GROUP_NORM, lambda _dims: group_norm)


def _norm(norm: str, groups: int = 8) -> str | tuple[str, dict[str, int | bool]]:
    """MONAI's norm setting for ``norm``: group norm in ``groups`` groups where they divide."""
    if norm == "group":
        return (_GROUP_NORM, {"num_groups": groups})
    return norm


def _resnet_norm(norm: str) -> str | tuple[str, dict[str, int | bool]]:
    """ResNet-18's norm: MONAI's ResNet sets every norm's weight, so instance norm is affine."""
    return ("instance", {"affine": True}) if norm == "instance" else _norm(norm, 32)


def build_model(
    config: ModelConfig,
    in_channels: int,
    num_classes: int,
    image_size: tuple[int, ...],
    dp_enabled: bool,
) -> nn.Module:
    """Build the configured network and, when DP is on, reject what Opacus cannot train.

    A segmentation network is 3D when ``image_size`` has three sides (volumes).

    Activations are never in-place: Opacus' per-sample gradient hooks crash on in-place ReLU,
    and its validator does not detect that (see docs/architecture.md).
    """
    act = ("relu", {"inplace": False})
    if config.name == "cnn":
        model: nn.Module = Classifier(
            in_shape=(in_channels, *image_size),
            classes=num_classes,
            channels=(16, 32, 64),
            strides=(2, 2, 2),
            num_res_units=1,
            act=act,
            norm=_norm(config.norm),
        )
    elif config.name == "pooled-cnn":
        model = PooledClassifier(
            in_shape=(in_channels, *image_size),
            classes=num_classes,
            channels=(16, 32, 64),
            strides=(2, 2, 2),
            act=act,
            norm=_norm(config.norm),
        )
    elif config.name == "resnet18":
        model = ResNet(
            block="basic",
            layers=[2, 2, 2, 2],
            block_inplanes=[64, 128, 256, 512],
            spatial_dims=2,
            n_input_channels=in_channels,
            conv1_t_size=3,
            conv1_t_stride=1,
            no_max_pool=True,
            num_classes=num_classes,
            act=act,
            norm=_resnet_norm(config.norm),
        )
        if config.norm != "batch":
            model = _replace_hardcoded_layers(model)
    elif config.name == "densenet121":
        _check_densenet_size(config, image_size)
        model = DenseNet121(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=num_classes,
            act=act,
            norm=_norm(config.norm, 8),
        )
    elif config.name in _DOWNSAMPLING:
        model = _segmentation_network(config, in_channels, num_classes, image_size)
    else:  # pragma: no cover - ModelConfig validation forbids other names
        raise ValueError(f"unknown model {config.name!r}")
    if dp_enabled:
        check_privacy_compatible(model, config.name)
    logger.info(
        "built %s (%s norm): %d parameters", config.name, config.norm, count_parameters(model)
    )
    return model


def _densenet_last_side(side: int) -> int:
    """Side of DenseNet-121's last feature map for an input side.

    A stride-2 convolution (kernel 7, padding 3), a stride-2 max pool (kernel 3, padding 1), then
    three stride-2 average pools (kernel 2).
    """
    side = (side - 1) // 2 + 1
    side = (side - 1) // 2 + 1
    for _ in range(3):
        side //= 2
    return side


def _check_densenet_size(config: ModelConfig, image_size: tuple[int, ...]) -> None:
    """Refuse instance norm on images DenseNet-121 reduces to one pixel (it cannot train there)."""
    if config.norm == "instance" and any(_densenet_last_side(s) < 2 for s in image_size):
        smallest = next(s for s in range(8, 1025) if _densenet_last_side(s) >= 2)
        raise ConfigError(
            "model",
            f"densenet121 with instance norm needs image sides of at least {smallest} (its last "
            f"feature map must keep more than one pixel), got {tuple(image_size)}: prepare the "
            "data with a larger --size or use norm 'group'",
        )


#: How often each segmentation network halves the image: sides must divide by 2**n.
_DOWNSAMPLING = {"basicunet": 4, "unet": 3}


def halvings(model_name: str) -> int:
    """How often segmentation network ``model_name`` halves its input (sides: multiples of 2**n).

    Instance norm needs more than one voxel at the bottom: sides of at least 2 * 2**n.
    """
    return _DOWNSAMPLING[model_name]


def halvings_of(model: nn.Module) -> int:
    """:func:`halvings` of a built segmentation network."""
    return halvings("basicunet" if isinstance(model, BasicUNet) else "unet")


def _segmentation_network(
    config: ModelConfig, in_channels: int, num_classes: int, image_size: tuple[int, ...]
) -> nn.Module:
    """A MONAI U-Net; refuses image sizes its encoder cannot halve down to 2 x 2 pixels."""
    factor = 2 ** _DOWNSAMPLING[config.name]
    if any(side % factor or side < 2 * factor for side in image_size):
        raise ConfigError(
            "model",
            f"{config.name} needs image sides that are multiples of {factor} and at least "
            f"{2 * factor}, got {tuple(image_size)}: prepare the data with a matching --size",
        )
    # Instance norm without affine parameters: nothing for DP-SGD to compute per sample in the
    # norm layers (with affine=True Opacus re-runs each norm per sample), and fewer weights to
    # noise; the convolution after it rescales freely. Measured in docs/results.md.
    norm = _norm(config.norm, 8) if config.norm != "instance" else ("instance", {"affine": False})
    model: nn.Module
    if config.name == "basicunet":
        # Upsampling by interpolation then convolution: every trainable layer is a Conv2d or a
        # norm that Opacus computes per-sample gradients for with its fast hooks.
        model = BasicUNet(
            spatial_dims=len(image_size),
            in_channels=in_channels,
            out_channels=num_classes,
            features=(16, 16, 32, 64, 128, 16),
            act=("leakyrelu", {"negative_slope": 0.1, "inplace": False}),
            norm=norm,
            upsample="nontrainable",
        )
    else:
        # MONAI's residual UNet: transposed convolutions upsample (Opacus trains those through
        # its slower functorch path).
        model = UNet(
            spatial_dims=len(image_size),
            in_channels=in_channels,
            out_channels=num_classes,
            channels=(16, 32, 64, 128),
            strides=(2, 2, 2),
            num_res_units=1,
            act=("relu", {"inplace": False}),
            norm=norm,
        )
    return model


def grad_sample_mode(model_name: str) -> str:
    """How Opacus should compute per-sample gradients for ``model_name``.

    BasicUNet trains faster under "functorch" (the convolution backward vmapped into one
    batched mkldnn call per layer) than under Opacus' per-layer "hooks" (unfold + bmm): in a
    micro-benchmark 10.0 against 12.2 ms per image (no DP 6.5), whole epochs in
    docs/results.md. The other networks keep the hooks they were measured with.
    """
    return "functorch" if model_name == "basicunet" else "hooks"


def check_privacy_compatible(model: nn.Module, name: str) -> None:
    """Raise ModelNotPrivacyCompatibleError naming every layer DP-SGD cannot train."""
    problems = [
        f"{module_name}: {type(module).__name__} mixes the samples of a batch"
        for module_name, module in model.named_modules()
        if isinstance(module, _BatchNorm)
    ]
    problems += [
        f"{module_name}: in-place activation {type(module).__name__}(inplace=True)"
        for module_name, module in model.named_modules()
        if getattr(module, "inplace", False)
    ]
    # Whatever else Opacus' validator objects to, once per distinct reason.
    problems += sorted(
        {
            str(err)
            for err in ModuleValidator.validate(model, strict=False)
            if "BatchNorm" not in str(err)
        }
    )
    if problems:
        raise ModelNotPrivacyCompatibleError(
            f"model {name!r} cannot be trained with differential privacy: "
            + "; ".join(problems)
            + ". Use norm='group' or 'instance', or switch DP off for a non-private baseline."
        )


def _replace_hardcoded_layers(model: nn.Module) -> nn.Module:
    """Swap BatchNorm for GroupNorm and make activations out-of-place.

    MONAI's ResNet blocks hard-code BatchNorm and in-place ReLU whatever ``norm`` says; Opacus'
    ModuleValidator.fix replaces the former.
    """
    model = ModuleValidator.fix(model)
    for module in model.modules():
        if getattr(module, "inplace", False):
            # torch annotates Module.__setattr__ for tensors and modules; any value works.
            module.inplace = False  # type: ignore[assignment]
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def freeze_all_but(model: nn.Module, model_name: str, part: str) -> int:
    """Let only ``part`` of network ``model_name`` train; returns its number of parameters.

    ``part`` is "all" or a part of :data:`common.config.TRAINABLE_PARTS` (the job's
    ``train.trainable``). Every other parameter gets ``requires_grad`` False: no gradient, no
    per-sample gradient, no DP noise, no optimiser update, hence a zero delta. Raises
    ConfigError naming the network and the part when the network has no such part, or when its
    definition names no parameter of the built network.
    """
    if part == "all":
        keep: tuple[str, ...] = ("",)
    elif part in TRAINABLE_PARTS.get(model_name, {}):
        keep = TRAINABLE_PARTS[model_name][part]
    else:
        raise ConfigError("train.trainable", f"{part!r} is not defined for model {model_name!r}")
    trained = 0
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(keep))
        trained += param.numel() if param.requires_grad else 0
    if not trained:
        raise ConfigError("train.trainable", f"{part!r} names no parameter of model {model_name!r}")
    return trained
