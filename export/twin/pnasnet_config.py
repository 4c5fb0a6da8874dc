"""PNASNet-5 hyperparameters and cell genotype, importable without TensorFlow.

Facts from TF-Slim `nets/nasnet/pnasnet.py` (`large_imagenet_config`, `PNasNetNormalCell`) and
`nasnet_utils.py` (`calc_reduction_layers`); see `pnasnet.py` for the network built from them.
"""

from __future__ import annotations

from dataclasses import dataclass

# The PNASNet-5 cell, as (left op, right op) per block, and which hidden state feeds each op.
# Hidden states: 0 = this cell's input after 1x1 conv, 1 = the previous-previous cell's output
# (size-matched), 2.. = outputs of the blocks so far.
PNASNET5_OPERATIONS: tuple[str, ...] = (
    "separable_5x5_2", "max_pool_3x3",
    "separable_7x7_2", "max_pool_3x3",
    "separable_5x5_2", "separable_3x3_2",
    "separable_3x3_2", "max_pool_3x3",
    "separable_3x3_2", "none",
)
PNASNET5_HIDDENSTATE_INDICES: tuple[int, ...] = (1, 1, 0, 0, 0, 0, 4, 0, 1, 0)
# 1 = consumed inside the cell; the rest (all five block outputs) are concatenated.
PNASNET5_USED_HIDDENSTATES: tuple[int, ...] = (1, 1, 0, 0, 0, 0, 0)

# TF Hub's TF2 image modules default to 0.99 for fine-tuning on small datasets; callers pass
# `batch_norm_momentum` to change it (the model card's example uses 0.997).
DEFAULT_BATCH_NORM_MOMENTUM = 0.99


@dataclass(frozen=True)
class PNASNetConfig:
    """The hyperparameters of TF-Slim's `large_imagenet_config` that shape the graph."""

    num_cells: int = 12
    num_conv_filters: int = 216
    stem_multiplier: float = 3.0
    filter_scaling_rate: float = 2.0
    num_reduction_layers: int = 2
    num_stem_cells: int = 2
    image_size: int = 331

    @property
    def reduction_indices(self) -> list[int]:
        """Cells that stride by 2, as in TF-Slim's `calc_reduction_layers`."""
        return [int(float(k) / (self.num_reduction_layers + 1) * self.num_cells)
                for k in range(1, self.num_reduction_layers + 1)]

    @property
    def final_filters(self) -> int:
        return int(self.num_conv_filters * self.filter_scaling_rate ** self.num_reduction_layers)

    @property
    def feature_dim(self) -> int:
        """Width of the pooled features: five concatenated block outputs of the last cell."""
        return 5 * self.final_filters


# TF-Slim `pnasnet_large`: the network behind google/imagenet/pnasnet_large/*/5.
LARGE = PNASNetConfig()
# Same cell, same code path, same [N,331,331,3] -> [N,4320] interface, ~10x fewer multiply-adds:
# four cells (three of them reductions) starting from 108 filters, so the last cell still has
# 864 filters and the pooled features are 4320 wide; 32 stem filters instead of 96.
REDUCED = PNASNetConfig(num_cells=4, num_conv_filters=108, stem_multiplier=1.0,
                        num_reduction_layers=3)
