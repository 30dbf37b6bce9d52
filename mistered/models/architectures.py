"""The MNIST architectures: the bundled default CNN and the small fully connected net of the exact certifiers.

Both are plain ``nn.Sequential`` stacks of ``Conv2d``/``Linear``/``ReLU``/``Flatten`` (no pooling,
no dropout), so the piecewise-linear certifiers can read them layer by layer.
"""

from __future__ import annotations

from torch import nn

from .normalized import Normalized

__all__ = ["MNIST_MEAN", "MNIST_STD", "mnist_cnn", "mnist_fc"]

MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)


def mnist_cnn(num_classes: int = 10, width: int = 32, hidden: int = 100) -> nn.Module:
    """Small CNN for ``(B, 1, 28, 28)`` images in ``[0, 1]`` -> ``(B, num_classes)`` logits.

    ``Normalized(Sequential(conv3x3(w), conv4x4/2(w) -> 14x14, conv4x4/2(2w) -> 7x7, fc(hidden), fc(K)))``
    with MNIST normalisation inside; strided convolutions instead of pooling.
    """
    net = nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, width, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2 * width * 7 * 7, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )
    return Normalized(net, MNIST_MEAN, MNIST_STD)


def mnist_fc(num_classes: int = 10, hidden: int = 20, depth: int = 2) -> nn.Sequential:
    """ReLU MLP ``784 -> hidden (x depth) -> num_classes`` on raw ``[0, 1]`` pixels, without normalisation.

    The default is the 784-20-20-10 network used by the exact certifiers (GeoCert, LipMIP):
    ``Sequential(Flatten, Linear, ReLU, Linear, ReLU, Linear)``.
    """
    layers: list[nn.Module] = [nn.Flatten()]
    width_in = 28 * 28
    for _ in range(depth):
        layers += [nn.Linear(width_in, hidden), nn.ReLU()]
        width_in = hidden
    layers.append(nn.Linear(width_in, num_classes))
    return nn.Sequential(*layers)
