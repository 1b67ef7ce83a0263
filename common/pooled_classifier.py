"""A small convolutional classifier with global average pooling: it finds a lesion anywhere."""

import torch
from monai.networks.nets import Classifier
from torch import nn

__all__ = ["PooledClassifier"]


class PooledClassifier(nn.Module):
    """MONAI's ``Classifier`` feature stack, then global average pooling and one linear layer.

    The same residual convolution units as the ``cnn`` model, but its head averages each
    feature map over the image (Lin et al., "Network in Network", ICLR 2014) instead of
    flattening it into a fully connected layer: the decision does not depend on where in the
    image a lesion lies, and the head has ``channels[-1] * classes`` weights instead of one per
    position. On the brain-MRI demo the flattened ``cnn`` memorised its training slices while
    this one learnt the lesions (docs/results.md, "A demo a DP model can learn").
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        classes: int,
        channels: tuple[int, ...],
        strides: tuple[int, ...],
        act: tuple[str, dict[str, bool]],
        norm: str | tuple[str, dict[str, int]],
    ) -> None:
        """Build the feature stack as ``Classifier`` does, and the pooled head."""
        super().__init__()
        stack = Classifier(
            in_shape=in_shape, classes=classes, channels=channels, strides=strides,
            num_res_units=1, act=act, norm=norm,
        )  # fmt: skip
        self.features = stack.net
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.final = nn.Linear(channels[-1], classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits [N, classes] of images [N, C, H, W]."""
        return self.final(torch.flatten(self.pool(self.features(images)), 1))
