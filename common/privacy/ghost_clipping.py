"""The sum of per-sample gradients clipped to C, with ghost norms where those are cheaper.

Mixed ghost clipping (Bu et al., "Scalable and Efficient Training of Large Convolutional Neural
Networks with Differential Privacy", NeurIPS 2022, arXiv:2205.10683) on book-keeping (Bu et
al., ICML 2023, arXiv:2210.00038): from one forward and one backward pass to the layers'
outputs, a layer's per-sample gradient norms are taken either from its materialised per-sample
gradients (common.privacy.per_sample_gradients) or, without materialising them, from the ghost
norm (Li et al., "Large Language Models Can Be Strong Differentially Private Learners", ICLR
2022, arXiv:2110.05679): for a convolution whose unfolded input is a [K, T] and output gradient
g [O, T], ``||g a^T||^2 = sum((a^T a) * (g^T g))``, which costs T^2 (K + O) instead of T K O
(chosen per layer when ``2 T^2 < K O``, Bu et al.'s rule); for a Linear layer on [B, features],
``||g||^2 ||a||^2``. The clipped sum of a ghost layer is then one ordinary weight gradient of
the output gradients scaled by each sample's clipping factor. Convolutions that read the same
input with the same kernel (a ResidualUnit's convolution and residual convolution) share one
unfolded input and are handled as one convolution with their output channels stacked: one
batched product instead of two. Same clipping arithmetic as
Opacus' DPOptimizer (per-parameter norms, their norm, C / (norm + 1e-6) capped at 1), so the
result equals :func:`common.privacy.per_sample_gradients.clip_and_sum` of the per-sample
gradients up to float rounding (tests/common/test_per_sample_gradients.py).
"""

from collections.abc import Callable

import torch
from opacus import GradSampleModule
from torch import nn

from common.privacy.per_sample_gradients import (
    GROUPED_CONV_MIN_POSITIONS,
    Patches,
    TrainableLayers,
    backward_to_outputs,
    clip_and_sum,
    layer_gradients,
    per_sample_gradients,
    trainable_layers,
    unfolded_inputs,
)

__all__ = ["clipped_gradient_sum", "uses_ghost_norm"]


#: Maps each sample's clipping factor [B] to the clipped sums of some parameters.
_ClippedSums = Callable[[torch.Tensor], dict[nn.Parameter, torch.Tensor]]


def _ghost_is_cheaper(positions: int, patch_size: int, channels: int) -> bool:
    """Bu et al.'s rule: a ghost norm when ``2 T^2 < K O`` (T positions, K patch size, O channels).

    On the CNN the ghost layers are its 4x4 maps and its Linear layer; materialising the 7x7
    and 14x14 layers' per-sample gradients measured faster than a ghost norm there (T^2 (K + O)
    for the Gram matrices against T K O), and a materialised gradient's clipped sum is one
    matrix-vector product.
    """
    return 2 * positions * positions < patch_size * channels


def uses_ghost_norm(module: nn.Module, inputs: torch.Tensor, grads: torch.Tensor) -> bool:
    """Whether ``module``'s weight norms are ghost norms when it has no partner layer.

    A Linear layer on [B, features] always; a convolution (unfolded, on fewer than
    GROUPED_CONV_MIN_POSITIONS output positions) when that is cheaper than materialising its
    per-sample gradient. Convolutions reading the same input are decided together
    (:func:`clipped_gradient_sum`).
    """
    if isinstance(module, nn.Linear):
        return inputs.dim() == 2
    if not _unfolds(module, grads):
        return False
    assert isinstance(module, nn.Conv2d)
    patch_size = module.weight[0].numel()
    return _ghost_is_cheaper(grads.shape[2] * grads.shape[3], patch_size, module.out_channels)


def _unfolds(module: nn.Module, grads: torch.Tensor) -> bool:
    """A convolution whose per-sample weight gradients come from unfolded inputs."""
    return (
        isinstance(module, nn.Conv2d)
        and module.groups == 1
        and grads.shape[2] * grads.shape[3] < GROUPED_CONV_MIN_POSITIONS
    )


def _linear(
    module: nn.Linear, own: dict[str, nn.Parameter], inputs: torch.Tensor, grads: torch.Tensor
) -> tuple[torch.Tensor, _ClippedSums]:
    """Ghost norm of a Linear layer on [B, features]: ||g_i a_i^T|| = ||g_i|| ||a_i||."""
    squared = torch.zeros(len(grads), dtype=grads.dtype)
    if "weight" in own:
        squared += grads.square().sum(1) * inputs.square().sum(1)
    if "bias" in own:
        squared += grads.square().sum(1)

    def sums(factors: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
        scaled = grads * factors[:, None]
        out = {}
        if "weight" in own:
            out[own["weight"]] = scaled.t() @ inputs
        if "bias" in own:
            out[own["bias"]] = scaled.sum(0)
        return out

    return squared, sums


def _convolutions(
    members: list[tuple[nn.Conv2d, dict[str, nn.Parameter], torch.Tensor]],
    patches: torch.Tensor,
) -> tuple[torch.Tensor, _ClippedSums]:
    """Convolutions reading the same unfolded input [B, K, T], as one convolution.

    Their output gradients are stacked along the channels (a ResidualUnit's convolution and
    residual convolution: one product instead of two); the squared norm of a sample is the sum
    of its layers' squared norms, all the clipping needs.
    """
    batch, patch_size, positions = patches.shape
    stacked = torch.cat([grads.flatten(2) for _, _, grads in members], 1)  # [B, O, T]
    channels = stacked.shape[1]
    if all("bias" in own for _, own, _ in members):  # one sum for every layer's bias
        biases = stacked.sum(2)
    else:
        with_bias = [grads.sum((2, 3)) for _, own, grads in members if "bias" in own]
        biases = torch.cat(with_bias, 1) if with_bias else stacked.new_zeros((batch, 0))
    squared = biases.square().sum(1)
    if _ghost_is_cheaper(positions, patch_size, min(m.out_channels for m, _, _ in members)):
        input_gram = torch.bmm(patches.transpose(1, 2), patches)
        output_gram = torch.bmm(stacked.transpose(1, 2), stacked)
        squared = squared + (input_gram * output_gram).sum((1, 2))

        def weights(factors: torch.Tensor) -> torch.Tensor:
            scaled = (stacked * factors[:, None, None]).transpose(0, 1).reshape(channels, -1)
            return scaled @ patches.transpose(1, 2).reshape(-1, patch_size)

    else:
        per_sample = torch.bmm(stacked, patches.transpose(1, 2)).view(batch, -1)
        squared = squared + torch.linalg.vector_norm(per_sample, dim=1).square()

        def weights(factors: torch.Tensor) -> torch.Tensor:
            return (factors @ per_sample).view(channels, patch_size)

    def sums(factors: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
        out: dict[nn.Parameter, torch.Tensor] = {}
        rows = weights(factors).split([m.out_channels for m, _, _ in members])
        bias_sums = (factors @ biases).split(
            [m.out_channels for m, own, _ in members if "bias" in own]
        )
        with_bias = iter(bias_sums)
        for (module, own, _), weight in zip(members, rows, strict=True):
            out[own["weight"]] = weight.reshape(module.weight.shape)
            if "bias" in own:
                out[own["bias"]] = next(with_bias)
        return out

    return squared, sums


def _materialised(
    module: nn.Module,
    own: dict[str, nn.Parameter],
    inputs: torch.Tensor,
    grads: torch.Tensor,
    cache: Patches,
) -> tuple[torch.Tensor, _ClippedSums]:
    """Any other layer: its per-sample gradients, their squared norms, their weighted sum."""
    layer = layer_gradients(module, inputs, grads, cache)
    flat = {param: layer[name].reshape(len(grads), -1) for name, param in own.items()}
    squared = torch.stack([torch.linalg.vector_norm(g, dim=1) for g in flat.values()]).square()
    squared = squared.sum(0)

    def sums(factors: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
        return {param: (factors @ g).view(param.shape) for param, g in flat.items()}

    return squared, sums


def clipped_gradient_sum(
    model: nn.Module,
    criterion: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    max_grad_norm: float,
    layers: TrainableLayers | None = None,
) -> tuple[list[torch.Tensor], float]:
    """Sum over samples of each sample's gradient clipped to ``max_grad_norm``, and the summed loss.

    One tensor per trainable parameter, in the model's order (parameters that do not require a
    gradient are neither clipped nor returned), the clipping of Opacus' DPOptimizer.
    ``criterion`` must be the mean of per-sample losses. ``layers`` is
    common.privacy.per_sample_gradients.trainable_layers of ``model`` when the caller keeps it
    across steps. A GradSampleModule (networks with layers per_sample_gradients does not know)
    runs as Opacus does it; any other ``model`` must have no
    common.privacy.per_sample_gradients.fast_path_blockers.
    """
    if len(targets) == 0 or isinstance(model, GradSampleModule):
        sample_grads, sample_loss = per_sample_gradients(model, criterion, images, targets)
        return clip_and_sum(sample_grads, max_grad_norm), sample_loss
    layers = layers or trainable_layers(model)
    recorded, loss = backward_to_outputs(model, criterion, images, targets, layers)
    cache: Patches = {}
    parts: list[tuple[torch.Tensor, _ClippedSums]] = []
    shared: dict[int, list[tuple[nn.Conv2d, dict[str, nn.Parameter], torch.Tensor]]] = {}
    patches_of: dict[int, torch.Tensor] = {}
    for module, inputs, grads in recorded:
        own = layers.owned[module]
        if isinstance(module, nn.Conv2d) and "weight" in own and _unfolds(module, grads):
            patches = unfolded_inputs(module, inputs, cache)
            shared.setdefault(id(patches), []).append((module, own, grads))
            patches_of[id(patches)] = patches
        elif isinstance(module, nn.Linear) and inputs.dim() == 2:
            parts.append(_linear(module, own, inputs, grads))
        else:
            parts.append(_materialised(module, own, inputs, grads, cache))
    parts += [_convolutions(members, patches_of[key]) for key, members in shared.items()]
    squared = torch.stack([part[0] for part in parts]).sum(0)
    # Opacus: C / (||per-parameter norms|| + 1e-6), at most 1; that norm is sqrt(sum of squares).
    factors = (max_grad_norm / (squared.clamp(min=0).sqrt() + 1e-6)).clamp(max=1.0)
    clipped: dict[nn.Parameter, torch.Tensor] = {}
    for _, sums in parts:
        clipped.update(sums(factors.to(loss.dtype)))
    return [clipped[param] for param in layers.params], float(loss)
