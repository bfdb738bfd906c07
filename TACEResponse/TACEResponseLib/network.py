"""MultiDL: one 3D network with a shared encoder, a segmentation pathway and a response pathway.

After Li et al., J Pers Med 2022;12(2):248. The response pathway pools features where the segmentation
says liver and tumor are, so the classifier looks at the lesion rather than the whole field of view.
Pooling is written as sums (``pooled_sums``) so that a volume processed in tiles gives the same pooled
statistics as one processed whole: add the sums of the tiles, then call ``response_logit``.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

BACKGROUND, LIVER, TUMOR = 0, 1, 2
_EPS = 1e-3
GLOBAL_POOLING_KEY = "global_pooling"


def _conv_norm_act(cin, cout, stride=1):
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.InstanceNorm3d(cout, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
    )


class ResidualBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = nn.InstanceNorm3d(channels, affine=True)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = nn.InstanceNorm3d(channels, affine=True)
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x):
        y = self.act(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return self.act(y + x)


class MultiDL(nn.Module):
    """Shared encoder -> (U-Net decoder: background/liver/tumor logits) + (response logit).

    ``voxel_volume_ml`` is the volume of one voxel on the model grid; it turns pooled tumor weight into
    millilitres so the response pathway sees tumor burden in physical units.
    """

    def __init__(self, in_channels=1, channels=(16, 32, 64, 128), n_classes=3, head_hidden=32,
                 voxel_volume_ml=0.008, dropout=0.2):
        super().__init__()
        self.channels = tuple(channels)
        self.voxel_volume_ml = float(voxel_volume_ml)
        self.stem = nn.Sequential(_conv_norm_act(in_channels, channels[0]), ResidualBlock(channels[0]))
        self.down = nn.ModuleList(
            nn.Sequential(_conv_norm_act(channels[i - 1], channels[i], stride=2), ResidualBlock(channels[i]))
            for i in range(1, len(channels))
        )
        self.up = nn.ModuleList(
            nn.ConvTranspose3d(channels[i + 1], channels[i], 2, stride=2) for i in range(len(channels) - 1)
        )
        self.merge = nn.ModuleList(
            nn.Sequential(_conv_norm_act(2 * channels[i], channels[i]), _conv_norm_act(channels[i], channels[i]))
            for i in range(len(channels) - 1)
        )
        self.seg_out = nn.Conv3d(channels[0], n_classes, 1)
        n_pooled = 2 * channels[0] + channels[-1] + 3
        self.head = nn.Sequential(
            nn.Linear(n_pooled, head_hidden), nn.LeakyReLU(0.01), nn.Dropout(dropout), nn.Linear(head_hidden, 1)
        )

    @property
    def pools_globally(self):
        """True for the classification-only baseline (see ``use_global_pooling``)."""
        return GLOBAL_POOLING_KEY in self._buffers

    def use_global_pooling(self):
        """Classification-only baseline: the response pathway pools the deepest encoder features over the
        whole input instead of over the segmented liver and tumor. The head keeps its layout (the region
        inputs are zero); a buffer records the mode in the weights, so a loader that builds the default
        network from a model card still gets this one back (see ``_load_from_state_dict``)."""
        if not self.pools_globally:
            self.register_buffer(GLOBAL_POOLING_KEY, torch.ones(1))
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + GLOBAL_POOLING_KEY in state_dict:
            self.use_global_pooling()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def size_multiple(self):
        """Every spatial size must be a multiple of this (one halving per encoder level)."""
        return 2 ** (len(self.channels) - 1)

    def forward_maps(self, x):
        """Return (segmentation logits, last decoder features, deepest encoder features)."""
        skips = [self.stem(x)]
        for level in self.down:
            skips.append(level(skips[-1]))
        deep = skips.pop()
        y = deep
        for i in reversed(range(len(self.up))):
            y = self.merge[i](torch.cat([self.up[i](y), skips[i]], dim=1))
        return self.seg_out(y), y, deep

    def pooled_sums(self, features, deep, liver_weight, tumor_weight):
        """Additive per-case statistics for the response pathway, shape (batch, n).

        liver_weight and tumor_weight are (batch, 1, *spatial) maps in [0, 1]: predicted probabilities, or a
        mask the user drew (the tumor) in place of the predicted one.
        """
        dims = tuple(range(2, features.dim()))
        if self.pools_globally:
            # same layout as below: region parts zero, the deep features summed over every voxel
            zeros = deep.new_zeros(deep.shape[0], 2 * features.shape[1])
            count = deep.new_full((deep.shape[0], 1), float(deep[0, 0].numel()))
            return torch.cat([zeros, deep.sum(dims), zeros[:, :2], count], dim=1)
        organ = (liver_weight + tumor_weight).clamp(max=1.0)
        organ_deep = F.adaptive_avg_pool3d(organ, deep.shape[2:]) * self.size_multiple ** 3
        return torch.cat([
            (features * tumor_weight).sum(dims),
            (features * liver_weight).sum(dims),
            (deep * organ_deep).sum(dims),
            tumor_weight.sum(dims),
            liver_weight.sum(dims),
            organ_deep.sum(dims),
        ], dim=1)

    def response_logit(self, sums):
        """Turn summed statistics (from one or many tiles) into the response logit, shape (batch,)."""
        c0, cd = self.channels[0], self.channels[-1]
        tumor_feat, liver_feat = sums[:, :c0], sums[:, c0:2 * c0]
        deep_feat = sums[:, 2 * c0:2 * c0 + cd]
        tumor_w, liver_w, organ_w = sums[:, -3:-2], sums[:, -2:-1], sums[:, -1:]
        tumor_ml = tumor_w * self.voxel_volume_ml
        liver_ml = liver_w * self.voxel_volume_ml
        scalars = torch.cat([
            torch.log1p(tumor_ml) / 5.0,
            tumor_w / (tumor_w + liver_w + _EPS),
            torch.log1p(liver_ml) / 8.0,
        ], dim=1)
        pooled = torch.cat([tumor_feat / (tumor_w + _EPS), liver_feat / (liver_w + _EPS),
                            deep_feat / (organ_w + _EPS), scalars], dim=1)
        return self.head(pooled).squeeze(1)

    def forward(self, x, tumor_mask=None):
        """Whole-input pass: returns (segmentation logits, response logit)."""
        seg_logits, features, deep = self.forward_maps(x)
        liver_w, tumor_w = region_weights(seg_logits, tumor_mask)
        return seg_logits, self.response_logit(self.pooled_sums(features, deep, liver_w, tumor_w))


def region_weights(seg_logits, tumor_mask=None):
    """Liver and tumor weight maps from the segmentation, or from a given tumor mask.

    With a mask, tumor = the mask and liver = predicted liver-or-tumor outside it, so voxels the user
    removed from the tumor count as liver parenchyma and voxels they added stop counting as liver.
    """
    probs = torch.softmax(seg_logits, dim=1)
    liver, tumor = probs[:, LIVER:LIVER + 1], probs[:, TUMOR:TUMOR + 1]
    if tumor_mask is None:
        return liver, tumor
    tumor_mask = tumor_mask.to(probs.dtype)
    return (liver + tumor) * (1.0 - tumor_mask), tumor_mask
