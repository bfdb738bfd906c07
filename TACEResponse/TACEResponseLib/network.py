"""MultiDL: one 3D network with a shared encoder, a segmentation pathway and a response pathway.

After Li et al., J Pers Med 2022;12(2):248. The response pathway pools features where the segmentation
says liver and tumor are, so the classifier looks at the lesion rather than the whole field of view.
Pooling is written as sums (``pooled_sums``) so that a volume processed in tiles gives the same pooled
statistics as one processed whole: add the sums of the tiles, then call ``response_logit``.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import intensity_statistics

BACKGROUND, LIVER, TUMOR = 0, 1, 2
_EPS = 1e-3
GLOBAL_POOLING_KEY = "global_pooling"
HEAD_MEAN_KEY, HEAD_SCALE_KEY = "head_input_mean", "head_input_scale"
HEAD_BUFFERS = (HEAD_MEAN_KEY, HEAD_SCALE_KEY)


def is_response_pathway_key(key):
    """True for the state-dict entries of the response pathway: the head and its input standardisation."""
    return key.startswith("head.") or key in HEAD_BUFFERS


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
    millilitres so the response pathway sees tumor burden in physical units. With ``intensity_bins`` > 0
    the response pathway also gets the lesion's intensity contrasts to the liver (washout, necrosis, rim
    enhancement; see :mod:`intensity_statistics`), which needs the HU window of the input normalisation.
    """

    def __init__(self, in_channels=1, channels=(16, 32, 64, 128), n_classes=3, head_hidden=32,
                 voxel_volume_ml=0.008, dropout=0.2, intensity_bins=0, intensity_window_hu=(-200.0, 300.0)):
        super().__init__()
        self.in_channels = int(in_channels)
        self.channels = tuple(channels)
        self.voxel_volume_ml = float(voxel_volume_ml)
        self.intensity_bins = int(intensity_bins)
        low, high = (float(v) for v in intensity_window_hu)
        self.hu_per_unit, self.hu_offset = (high - low) / 2.0, (high + low) / 2.0
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
        self.n_region_sums = 2 * channels[0] + channels[-1] + 3
        n_pooled = self.n_region_sums
        if self.intensity_bins:
            n_pooled += self.in_channels * len(intensity_statistics.DESCRIPTORS)
        if head_hidden:
            self.head = nn.Sequential(nn.Linear(n_pooled, head_hidden), nn.LeakyReLU(0.01), nn.Dropout(dropout),
                                      nn.Linear(head_hidden, 1))
        else:  # a logistic model: what a few hundred cases support
            self.head = nn.Linear(n_pooled, 1)
        # the response pathway's inputs are standardised with statistics of the training cases (set when the
        # pathway is refitted on whole cases; identity until then)
        self.register_buffer(HEAD_MEAN_KEY, torch.zeros(n_pooled))
        self.register_buffer(HEAD_SCALE_KEY, torch.ones(n_pooled))

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
        # weights saved before the pathway's inputs were standardised: identity standardisation
        for key, default in zip(HEAD_BUFFERS, (torch.zeros_like, torch.ones_like)):
            if prefix + key not in state_dict:
                state_dict[prefix + key] = default(getattr(self, key))
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

    def histogram_regions(self, liver_weight, tumor_weight):
        """Region weights for the intensity histograms (None when the network does not use them). They need
        one voxel of context: compute them on a whole tile and crop them with the other maps."""
        if not self.intensity_bins or self.pools_globally:
            return None
        return intensity_statistics.region_weights_for_histograms(liver_weight, tumor_weight)

    def pooled_sums(self, features, deep, liver_weight, tumor_weight, image=None, histogram_regions=None):
        """Additive per-case statistics for the response pathway, shape (batch, n).

        liver_weight and tumor_weight are (batch, 1, *spatial) maps in [0, 1]: predicted probabilities, or a
        mask the user drew (the tumor) in place of the predicted one. ``image`` (the network input on the
        same voxels) is needed when the network uses intensity statistics; ``histogram_regions`` are their
        region weights when computed with more context than these voxels (see ``histogram_regions``).
        """
        dims = tuple(range(2, features.dim()))
        if self.pools_globally:
            # same layout as below: region parts zero, the deep features summed over every voxel
            zeros = deep.new_zeros(deep.shape[0], 2 * features.shape[1])
            count = deep.new_full((deep.shape[0], 1), float(deep[0, 0].numel()))
            sums = [zeros, deep.sum(dims), zeros[:, :2], count]
        else:
            organ = (liver_weight + tumor_weight).clamp(max=1.0)
            organ_deep = F.adaptive_avg_pool3d(organ, deep.shape[2:]) * self.size_multiple ** 3
            sums = [
                (features * tumor_weight).sum(dims),
                (features * liver_weight).sum(dims),
                (deep * organ_deep).sum(dims),
                tumor_weight.sum(dims),
                liver_weight.sum(dims),
                organ_deep.sum(dims),
            ]
        if self.intensity_bins:
            batch = deep.shape[0]
            if self.pools_globally:
                sums.append(deep.new_zeros(batch, self.in_channels * len(intensity_statistics.REGIONS)
                                           * self.intensity_bins))
            else:
                if image is None:
                    raise ValueError("this network's response pathway needs the input image")
                if histogram_regions is None:
                    histogram_regions = self.histogram_regions(liver_weight, tumor_weight)
                sums.append(intensity_statistics.histogram_sums(image, histogram_regions, self.intensity_bins))
        return torch.cat(sums, dim=1)

    @property
    def deep_inputs(self):
        """Where the deepest encoder features sit among the response pathway's inputs (a slice)."""
        c0 = self.channels[0]
        return slice(2 * c0, 2 * c0 + self.channels[-1])

    def response_inputs(self, sums):
        """The response pathway's inputs from summed statistics (from one or many tiles), before
        standardisation: region means of the features, tumor and liver volume, and the intensity descriptors."""
        c0, cd, n = self.channels[0], self.channels[-1], self.n_region_sums
        tumor_feat, liver_feat = sums[:, :c0], sums[:, c0:2 * c0]
        deep_feat = sums[:, 2 * c0:2 * c0 + cd]
        tumor_w, liver_w, organ_w = sums[:, n - 3:n - 2], sums[:, n - 2:n - 1], sums[:, n - 1:n]
        tumor_ml = tumor_w * self.voxel_volume_ml
        liver_ml = liver_w * self.voxel_volume_ml
        parts = [tumor_feat / (tumor_w + _EPS), liver_feat / (liver_w + _EPS), deep_feat / (organ_w + _EPS),
                 torch.log1p(tumor_ml) / 5.0, tumor_w / (tumor_w + liver_w + _EPS), torch.log1p(liver_ml) / 8.0]
        if self.intensity_bins:
            parts.append(intensity_statistics.descriptors(sums[:, n:], self.in_channels, self.intensity_bins,
                                                          self.hu_per_unit, self.hu_offset))
        return torch.cat(parts, dim=1)

    def response_logit(self, sums):
        """Turn summed statistics (from one or many tiles) into the response logit, shape (batch,)."""
        standardised = (self.response_inputs(sums) - self.head_input_mean) / self.head_input_scale
        return self.head(standardised).squeeze(1)

    def forward(self, x, tumor_mask=None):
        """Whole-input pass: returns (segmentation logits, response logit)."""
        seg_logits, features, deep = self.forward_maps(x)
        liver_w, tumor_w = region_weights(seg_logits, tumor_mask)
        return seg_logits, self.response_logit(self.pooled_sums(features, deep, liver_w, tumor_w, image=x))


def region_weights(seg_logits, tumor_mask=None, liver_mask=None):
    """Liver and tumor weight maps from the segmentation, or from a given tumor and/or liver mask.

    With a tumor mask, tumor = the mask and liver = predicted liver-or-tumor outside it, so voxels the user
    removed from the tumor count as liver parenchyma and voxels they added stop counting as liver.
    With a liver mask (the whole organ, tumor included or not), liver = the mask outside the tumor.
    """
    probs = torch.softmax(seg_logits, dim=1)
    liver, tumor = probs[:, LIVER:LIVER + 1], probs[:, TUMOR:TUMOR + 1]
    if tumor_mask is None and liver_mask is None:
        return liver, tumor
    organ = liver + tumor if liver_mask is None else liver_mask.to(probs.dtype)
    if tumor_mask is not None:
        tumor = tumor_mask.to(probs.dtype)
    return organ * (1.0 - tumor), tumor
