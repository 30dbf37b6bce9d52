"""mistered: composable threat models, attacks, adversarial training and certification for PyTorch.

Images are ``(B, C, H, W)`` float tensors in ``[0, 1]`` everywhere; models take such images and
return logits (normalisation lives inside the model wrapper).
"""

from .errors import MisteredError

__version__ = "0.1.0"
__all__ = ["MisteredError", "__version__"]
