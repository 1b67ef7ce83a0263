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
the output gradients scaled by each sample's clipping factor. Same clipping arithmetic as
Opacus' DPOptimizer (per-parameter norms, their norm, C / (norm + 1e-6) capped at 1), so the
result equals :func:`common.privacy.per_sample_gradients.clip_and_sum` of the per-sample
gradients up to float rounding (tests/common/test_per_sample_gradients.py).
"""

from dataclasses import dataclass

import torch
from opacus import GradSampleModule
from torch import nn
from torch.nn.grad import conv2d_weight

from common.privacy.per_sample_gradients import (
    GROUPED_CONV_MIN_POSITIONS,
    Patches,
    backward_to_outputs,
    clip_and_sum,
    layer_gradients,
    per_sample_gradients,
    trainable,
    unfolded_inputs,
)

__all__ = ["clipped_gradient_sum", "uses_ghost_norm"]


@dataclass(frozen=True)
class _GhostWeight:
    """What a ghost layer's clipped weight sum needs: the layer, its input, its output grads."""

    module: nn.Conv2d | nn.Linear
    inputs: torch.Tensor
    grads: torch.Tensor


def uses_ghost_norm(module: nn.Module, inputs: torch.Tensor, grads: torch.Tensor) -> bool:
    """Whether ``module``'s weight norms are ghost norms (cheaper than materialising them)."""
    if isinstance(module, nn.Linear):
        return inputs.dim() == 2
    if not isinstance(module, nn.Conv2d) or module.groups > 1:
        return False
    positions = grads.shape[2] * grads.shape[3]
    if positions >= GROUPED_CONV_MIN_POSITIONS:
        return False
    return 2 * positions * positions < module.weight[0].numel() * module.weight.shape[0]


def _ghost_norms(
    module: nn.Conv2d | nn.Linear,
    inputs: torch.Tensor,
    grads: torch.Tensor,
    cache: Patches,
    grams: dict[int, torch.Tensor],
) -> torch.Tensor:
    """[B] norms of each sample's weight gradient, never materialising it."""
    if isinstance(module, nn.Linear):
        return grads.norm(2, dim=1) * inputs.norm(2, dim=1)
    patches = unfolded_inputs(module, inputs, cache)
    if id(patches) not in grams:  # a residual pair shares its input's Gram matrix
        grams[id(patches)] = torch.bmm(patches.transpose(1, 2), patches)
    flat = grads.flatten(2)
    output_gram = torch.bmm(flat.transpose(1, 2), flat)
    return (grams[id(patches)] * output_gram).sum((1, 2)).clamp(min=0).sqrt()


def _clipped_weight(ghost: _GhostWeight, factors: torch.Tensor) -> torch.Tensor:
    """sum_i factor_i * (sample i's weight gradient): one ordinary weight gradient."""
    module, inputs, grads = ghost.module, ghost.inputs, ghost.grads
    scaled = grads * factors.to(grads.dtype).view(-1, *[1] * (grads.dim() - 1))
    if isinstance(module, nn.Linear):
        return scaled.t() @ inputs
    return conv2d_weight(
        inputs,
        module.weight.shape,
        scaled,
        module.stride,
        module.padding,
        module.dilation,
        module.groups,
    )


def clipped_gradient_sum(
    model: nn.Module,
    criterion: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    max_grad_norm: float,
) -> tuple[list[torch.Tensor], float]:
    """Sum over samples of each sample's gradient clipped to ``max_grad_norm``, and the summed loss.

    One tensor per parameter of :func:`trainable`, the clipping of Opacus' DPOptimizer.
    ``criterion`` must be the mean of per-sample losses. A GradSampleModule (networks with
    layers per_sample_gradients does not know) runs as Opacus does it; any other ``model``
    must have no common.privacy.fast_path_blockers.
    """
    if len(targets) == 0 or isinstance(model, GradSampleModule):
        sample_grads, sample_loss = per_sample_gradients(model, criterion, images, targets)
        return clip_and_sum(sample_grads, max_grad_norm), sample_loss
    layers, loss = backward_to_outputs(model, criterion, images, targets)
    cache: Patches = {}
    grams: dict[int, torch.Tensor] = {}
    materialised: dict[nn.Parameter, torch.Tensor] = {}
    ghosts: dict[nn.Parameter, _GhostWeight] = {}
    norms: dict[nn.Parameter, torch.Tensor] = {}
    for module, inputs, grads in layers:
        own = {n: p for n, p in module.named_parameters(recurse=False) if p.requires_grad}
        if "weight" in own and uses_ghost_norm(module, inputs, grads):
            assert isinstance(module, nn.Conv2d | nn.Linear)
            weight = own.pop("weight")
            norms[weight] = _ghost_norms(module, inputs, grads, cache, grams)
            ghosts[weight] = _GhostWeight(module, inputs, grads)
            if "bias" in own:  # the bias's per-sample gradient is small: materialise it
                bias = own.pop("bias")
                materialised[bias] = grads.flatten(2).sum(2) if grads.dim() > 2 else grads
        if own:
            layer = layer_gradients(module, inputs, grads, cache)
            for name, param in own.items():
                materialised[param] = layer[name].reshape(len(targets), -1)
    params = trainable(model)
    for param, grad in materialised.items():
        norms[param] = grad.norm(2, dim=1)
    total = torch.stack([norms[p] for p in params], dim=1).norm(2, dim=1)
    factors = (max_grad_norm / (total + 1e-6)).clamp(max=1.0)
    clipped = []
    for param in params:
        if param in ghosts:
            clipped.append(_clipped_weight(ghosts[param], factors))
        else:
            clipped.append((factors.to(param.dtype) @ materialised[param]).view(param.shape))
    return clipped, float(loss)
