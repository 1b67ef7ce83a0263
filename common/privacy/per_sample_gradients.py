"""Per-sample gradients from one forward and one backward pass, and their clipped sum.

Book-keeping per-sample gradients (Bu et al., "Differentially Private Optimization on Large
Model at Small Cost", ICML 2023, arXiv:2210.00038): the forward pass records each trainable
layer's input, the backward pass computes only the gradients of the layers' outputs (no weight
gradient at all), and each layer's per-sample weight gradients follow from those two tensors.
For a convolution on a large feature map that is one grouped convolution over the batch; on a
small one, unfold + bmm (Opacus' formula for every size). The result is the per-sample
gradient Opacus' ``GradSampleModule`` computes, for Conv2d, Linear and GroupNorm layers, without
its per-layer hooks and Python bookkeeping (measured in docs/results.md). Networks with other
trainable layers keep Opacus' GradSampleModule: :func:`fast_path_blockers` says which.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from opacus import GradSampleModule
from torch import nn
from torch.nn.grad import conv2d_weight

__all__ = [
    "GROUPED_CONV_MIN_POSITIONS",
    "Patches",
    "TrainableLayers",
    "backward_to_outputs",
    "clip_and_sum",
    "fast_path_blockers",
    "layer_gradients",
    "per_sample_gradients",
    "trainable",
    "trainable_layers",
    "unfolded_inputs",
]

#: Layers whose per-sample gradients this module computes.
SUPPORTED_LAYERS = (nn.Conv2d, nn.Linear, nn.GroupNorm)

#: Output positions from which a convolution's per-sample weight gradients are one grouped
#: convolution rather than unfold + bmm (faster on the U-Net's 64x64 maps, slower on the CNN's
#: 14x14 and smaller; measured in a micro-benchmark, both exact).
GROUPED_CONV_MIN_POSITIONS = 256


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """The parameters DP-SGD clips and noises, in the model's order."""
    return [p for p in model.parameters() if p.requires_grad]


@dataclass(frozen=True)
class TrainableLayers:
    """The layers of ``model`` that own trainable parameters, and those parameters.

    Worked out once for the steps of one round (:class:`~common.privacy.image_dp.
    SitePrivacyEngine`), not walked again every step: which parameters train is fixed before a
    round starts (common.models.freeze_all_but) and the network does not change during it.
    """

    model: nn.Module
    #: Each layer with trainable parameters: its own trainable parameters by name (model order).
    owned: dict[nn.Module, dict[str, nn.Parameter]]
    #: Every trainable parameter in the model's order, as :func:`trainable` lists them.
    params: tuple[nn.Parameter, ...]


def trainable_layers(model: nn.Module) -> TrainableLayers:
    """``model``'s layers with trainable parameters, and its trainable parameters in order."""
    owned = {}
    for module in model.modules():
        own = {n: p for n, p in module.named_parameters(recurse=False) if p.requires_grad}
        if own:
            owned[module] = own
    return TrainableLayers(model, owned, tuple(trainable(model)))


def fast_path_blockers(model: nn.Module) -> list[str]:
    """Why :func:`per_sample_gradients` cannot run on ``model`` ([] when it can)."""
    blockers = []
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        if not isinstance(module, SUPPORTED_LAYERS):
            blockers.append(f"{name}: {type(module).__name__}")
        elif isinstance(module, nn.Conv2d) and (
            module.padding_mode != "zeros" or isinstance(module.padding, str)
        ):
            blockers.append(f"{name}: Conv2d padding {module.padding!r} {module.padding_mode}")
    return blockers


#: Unfolded inputs of one backward pass, by input tensor and unfolding: a ResidualUnit's
#: convolution and its residual convolution read the same input with the same kernel.
Patches = dict[tuple[int, tuple[int, ...], tuple[object, ...]], torch.Tensor]


def unfolded_inputs(module: nn.Conv2d, inputs: torch.Tensor, cache: Patches) -> torch.Tensor:
    """``F.unfold`` of ``inputs`` for ``module`` [B, Cin * kh * kw, positions], computed once.

    The patches are gathered from a strided view of the padded input (one copy), the values
    and layout of ``F.unfold``, which is slower on CPU for the small maps of the CNN.
    """
    unfolding = (module.kernel_size, module.dilation, module.padding, module.stride)
    key = (inputs.data_ptr(), tuple(inputs.shape), unfolding)
    if key not in cache:
        cache[key] = _unfold(module, inputs)
    return cache[key]


def _unfold(module: nn.Conv2d, inputs: torch.Tensor) -> torch.Tensor:
    if isinstance(module.padding, str):  # fast_path_blockers keeps such layers off this path
        raise ValueError(f"Conv2d padding {module.padding!r}: unfold needs explicit padding")
    pad_h, pad_w = module.padding
    padded = F.pad(inputs, (pad_w, pad_w, pad_h, pad_h)) if pad_h or pad_w else inputs
    (kernel_h, kernel_w), (dil_h, dil_w) = module.kernel_size, module.dilation
    stride_h, stride_w = module.stride
    batch, channels, height, width = padded.shape
    out_h = (height - dil_h * (kernel_h - 1) - 1) // stride_h + 1
    out_w = (width - dil_w * (kernel_w - 1) - 1) // stride_w + 1
    s_b, s_c, s_h, s_w = padded.stride()
    windows = padded.as_strided(
        (batch, channels, kernel_h, kernel_w, out_h, out_w),
        (s_b, s_c, dil_h * s_h, dil_w * s_w, stride_h * s_h, stride_w * s_w),
        padded.storage_offset(),
    )
    return windows.reshape(batch, channels * kernel_h * kernel_w, out_h * out_w)


def _conv_weight(
    module: nn.Conv2d, inputs: torch.Tensor, grads: torch.Tensor, cache: Patches
) -> torch.Tensor:
    batch = len(inputs)
    if grads.shape[2] * grads.shape[3] >= GROUPED_CONV_MIN_POSITIONS or module.groups > 1:
        # Each sample its own group: one convolution-weight gradient for the whole batch.
        weight = conv2d_weight(
            inputs.reshape(1, -1, *inputs.shape[2:]),
            (batch * module.weight.shape[0], *module.weight.shape[1:]),
            grads.reshape(1, -1, *grads.shape[2:]),
            module.stride,
            module.padding,
            module.dilation,
            batch * module.groups,
        )
        return weight.view(batch, *module.weight.shape)
    patches = unfolded_inputs(module, inputs, cache)
    return torch.bmm(grads.flatten(2), patches.transpose(1, 2)).view(batch, *module.weight.shape)


def layer_gradients(
    module: nn.Module, inputs: torch.Tensor, grads: torch.Tensor, cache: Patches
) -> dict[str, torch.Tensor]:
    """Per-sample gradients [B, *shape] of ``module``'s weight and bias."""
    if isinstance(module, nn.Linear):
        # [B, positions, features]: a Linear over extra dimensions sums over them.
        if inputs.dim() == 2:
            flat_in, flat_grad = inputs[:, None], grads[:, None]
        else:
            flat_in, flat_grad = inputs.flatten(1, -2), grads.flatten(1, -2)
        return {
            "weight": torch.einsum("bto,bti->boi", flat_grad, flat_in),
            "bias": flat_grad.sum(1),
        }
    if isinstance(module, nn.Conv2d):
        return {"weight": _conv_weight(module, inputs, grads, cache), "bias": grads.sum((2, 3))}
    assert isinstance(module, nn.GroupNorm)
    normalised = F.group_norm(inputs, module.num_groups, eps=module.eps)
    return {
        "weight": (normalised * grads).flatten(2).sum(2),
        "bias": grads.flatten(2).sum(2),
    }


def backward_to_outputs(
    model: nn.Module,
    criterion: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layers: TrainableLayers | None = None,
) -> tuple[list[tuple[nn.Module, torch.Tensor, torch.Tensor]], torch.Tensor]:
    """One forward and one backward pass to the outputs of the layers that have parameters.

    Returns (layer, its input, the gradient of the summed loss w.r.t. its output) for every
    layer with trainable parameters, in the order they ran, and the summed loss. No weight
    gradient is computed. ``criterion`` must be the mean of per-sample losses. ``layers`` is
    :func:`trainable_layers` of ``model`` when the caller keeps it across steps.
    """
    records: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if module in records:
            raise RuntimeError(f"{type(module).__name__} runs twice in one forward pass")
        records[module] = (args[0].detach(), output)

    layers = layers or trainable_layers(model)
    hooks = [module.register_forward_hook(record) for module in layers.owned]
    try:
        loss = criterion(model(images), targets) * len(targets)
    finally:
        for hook in hooks:
            hook.remove()
    modules = list(records)
    output_grads = torch.autograd.grad(loss, [records[m][1] for m in modules])
    recorded = [
        (module, records[module][0], grads)
        for module, grads in zip(modules, output_grads, strict=True)
    ]
    return recorded, loss.detach()


def per_sample_gradients(
    model: nn.Module, criterion: nn.Module, images: torch.Tensor, targets: torch.Tensor
) -> tuple[list[torch.Tensor], float]:
    """Each sample's gradient of its own loss, per trainable parameter, and the summed loss.

    ``criterion`` must be the mean of per-sample losses (so that the batch mean times the batch
    size is their sum). A GradSampleModule is run as Opacus does it (networks with layers this
    module does not know); any other ``model`` must have no :func:`fast_path_blockers`.
    Returns one tensor [B, *parameter shape] per parameter of :func:`trainable`.
    """
    params = trainable(model)
    if len(targets) == 0:
        return [torch.zeros((0, *p.shape), dtype=p.dtype) for p in params], 0.0
    if isinstance(model, GradSampleModule):
        return _opacus_per_sample(model, params, criterion, images, targets)
    layers, loss = backward_to_outputs(model, criterion, images, targets)
    by_param: dict[nn.Parameter, torch.Tensor] = {}
    cache: Patches = {}
    for module, inputs, grads in layers:
        layer = layer_gradients(module, inputs, grads, cache)
        for name, param in module.named_parameters(recurse=False):
            if param.requires_grad:
                by_param[param] = layer[name]
    return [by_param[p] for p in params], float(loss.detach())


def _opacus_per_sample(
    model: GradSampleModule,
    params: list[nn.Parameter],
    criterion: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
) -> tuple[list[torch.Tensor], float]:
    for p in params:
        vars(p)["grad_sample"] = None
        p.grad = None
    loss = criterion(model(images), targets)
    loss.backward()
    grads = []
    for p in params:
        grad_sample = vars(p).get("grad_sample")
        if not isinstance(grad_sample, torch.Tensor):
            raise RuntimeError("no per-sample gradient: wrap the model in a GradSampleModule")
        grads.append(grad_sample)
        vars(p)["grad_sample"] = None
        p.grad = None
    return grads, float(loss.detach()) * len(targets)


def clip_and_sum(per_unit: list[torch.Tensor], max_grad_norm: float) -> list[torch.Tensor]:
    """Sum over units (images or patients) of each unit's gradient clipped to ``max_grad_norm``.

    ``per_unit`` holds one tensor [U, *parameter shape] per parameter; the norm of a unit is
    over all its parameters together. The arithmetic of Opacus' DPOptimizer
    (``clip_and_accumulate``): per-parameter norms, their norm, factor C / (norm + 1e-6) capped
    at 1.
    """
    if not per_unit or len(per_unit[0]) == 0:
        return [torch.zeros(g.shape[1:], dtype=g.dtype) for g in per_unit]
    flat = [g.reshape(len(g), -1) for g in per_unit]
    norms = torch.stack([g.norm(2, dim=-1) for g in flat], dim=1)
    factors = (max_grad_norm / (norms.norm(2, dim=1) + 1e-6)).clamp(max=1.0)
    # One matrix-vector product per parameter: sum_i factor_i * g_i.
    return [
        (factors.to(g.dtype) @ g).view(grad.shape[1:])
        for g, grad in zip(flat, per_unit, strict=True)
    ]
