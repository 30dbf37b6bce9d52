"""Training: standard and adversarial (any threat, several at once), perceptual adversarial (PAT), LMT, L∞-dist, Gaussian noise (smoothing);
resumable; distributed.

The loop (:func:`fit`) is generic over an :class:`Objective`; :func:`build_objective` makes one by
method name. Adversarial training uses :mod:`mistered.attacks` for its inner maximisation. It trains
any ``nn.Module`` on any labelled data set, streamed batch by batch; a run resumes bitwise after a
kill and may be extended to more epochs (:mod:`mistered.train.resume`).
"""

from .adversarial import AdversarialObjective, StandardObjective, attack_batch
from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import DistContext, init_distributed, shutdown_distributed
from .evaluation import held_out_accuracy
from .loop import TrainConfig, TrainResult, fit
from .methods import METHODS, build_objective, default_method
from .objectives import Objective
from .pat import PerceptualAdversarialObjective
from .strategies import STRATEGIES

__all__ = [
    "Objective", "StandardObjective", "AdversarialObjective", "PerceptualAdversarialObjective", "attack_batch", "build_objective", "default_method",
    "METHODS", "STRATEGIES", "TrainConfig", "TrainResult", "fit", "held_out_accuracy", "load_checkpoint",
    "save_checkpoint", "DistContext", "init_distributed", "shutdown_distributed",
]
