"""d2lbn: the helper package of the d2lbn course on batch normalization.

Everything a chapter writes out in full and then reuses lives here, tested:

- :mod:`d2lbn.norm`: batch normalization from scratch (functional form, module, hand-derived
  backward pass, folding into the preceding layer);
- :mod:`d2lbn.data`: Fashion-MNIST held in memory, found offline or downloaded;
- :mod:`d2lbn.models`: the LeNet and MLP models the chapters train;
- :mod:`d2lbn.train`: a training loop that returns a history, with accuracy and seeding helpers;
- :mod:`d2lbn.plot`: the book's figure style and plots.
"""

from d2lbn.norm import BatchNorm, BatchNormFunction, batch_norm, fold_batch_norm

__version__ = "0.1.0"

__all__ = [
    "BatchNorm",
    "BatchNormFunction",
    "batch_norm",
    "fold_batch_norm",
]
