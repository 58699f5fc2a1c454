"""d2lbn: the helper package of the d2lbn course on batch normalization.

Everything a chapter writes out in full and then reuses lives here, tested:

- :mod:`d2lbn.norm`: batch normalization from scratch (functional form, module, hand-derived
  backward pass, folding into the preceding layer);
- :mod:`d2lbn.data`: Fashion-MNIST held in memory, found offline or downloaded;
- :mod:`d2lbn.models`: the LeNet and MLP models the chapters train;
- :mod:`d2lbn.train`: a training loop that returns a history, with accuracy and seeding helpers;
- :mod:`d2lbn.plot`: the book's figure style and plots;
- :mod:`d2lbn.diagnostics`: per-layer activation, gradient and update statistics (chapter 1);
- :mod:`d2lbn.variants`: layer, group and instance norm from scratch (chapter 9);
- :mod:`d2lbn.distributed`: batch norm synchronized across processes (chapter 10), and
  :mod:`d2lbn.ddp_lenet`, the script that trains LeNet data-parallel with it.
"""

from d2lbn import diagnostics
from d2lbn.data import (
    CLASSES,
    FashionMNISTError,
    TensorBatches,
    fashion_mnist_tensors,
    load_fashion_mnist,
    locate_fashion_mnist,
    text_labels,
)
from d2lbn.distributed import SyncBatchNorm, convert_sync_batchnorm
from d2lbn.models import count_parameters, lenet, mlp
from d2lbn.norm import BatchNorm, BatchNormFunction, batch_norm, fold_batch_norm
from d2lbn.plot import (
    label_log_axis,
    plot_histograms,
    plot_history,
    plot_lines,
    plot_percentiles,
    set_style,
    show_images,
)
from d2lbn.train import History, evaluate_accuracy, set_seed, train, try_gpu
from d2lbn.variants import GroupNorm, InstanceNorm, LayerNorm

__version__ = "0.1.0"

__all__ = [
    # norm
    "BatchNorm",
    "BatchNormFunction",
    "batch_norm",
    "fold_batch_norm",
    # data
    "CLASSES",
    "FashionMNISTError",
    "TensorBatches",
    "fashion_mnist_tensors",
    "load_fashion_mnist",
    "locate_fashion_mnist",
    "text_labels",
    # models
    "lenet",
    "mlp",
    "count_parameters",
    # train
    "History",
    "train",
    "evaluate_accuracy",
    "set_seed",
    "try_gpu",
    # plot
    "set_style",
    "plot_history",
    "plot_lines",
    "label_log_axis",
    "plot_percentiles",
    "plot_histograms",
    "show_images",
    # diagnostics (a module: d2lbn.diagnostics.snapshot, ...)
    "diagnostics",
    # variants
    "LayerNorm",
    "GroupNorm",
    "InstanceNorm",
    # distributed
    "SyncBatchNorm",
    "convert_sync_batchnorm",
]
