"""First-order intensity statistics of the lesion relative to the liver, for the response pathway.

The imaging features that drive TACE response are read by radiologists as intensity contrasts: washout
(viable tumor darker than the liver in the portal-venous phase), necrosis (a near-fluid core) and an
enhancing capsule (a rim brighter than the liver). A network whose features are instance-normalised sees
such absolute differences poorly, so the response pathway also gets them explicitly.

They are computed from soft intensity histograms of the network input under three region weights: the
tumor, the liver, and the tumor's rim (its outer voxel layer). Histograms are sums, so tiles add up to the
whole-volume histogram exactly, like the other pooled statistics. Bins are triangular (linear
interpolation between bin centres), so a histogram keeps the weighted mean of what it counts.
"""

import torch
import torch.nn.functional as F

REGIONS = ("tumor", "liver", "tumor_rim")
DESCRIPTORS = ("washout", "necrotic_fraction", "rim_enhancement")
# contrasts in HU: below the liver by more than this is necrosis (fluid), above it by more is enhancement
NECROSIS_BELOW_LIVER_HU = 60.0
RIM_ABOVE_LIVER_HU = 15.0
_EPS = 1e-6


def region_weights_for_histograms(liver_w, tumor_w):
    """(batch, 3, *spatial) weights: tumor, liver and tumor rim (tumor minus its one-voxel erosion).

    Needs one voxel of context beyond the part that is kept: compute on a whole tile, then crop."""
    eroded = -F.max_pool3d(-tumor_w, 3, stride=1, padding=1)
    rim = (tumor_w - eroded).clamp(min=0.0)
    return torch.cat([tumor_w, liver_w, rim], dim=1)


def histogram_sums(image, regions, bins):
    """Soft histograms of each input channel under each region weight, flattened to (batch, C * 3 * bins).

    ``image`` (batch, C, *spatial) is the normalised network input in [-1, 1]."""
    batch, n_channels = image.shape[:2]
    n_regions = regions.shape[1]
    weights = regions.reshape(batch, n_regions, -1).float()
    out = []
    for channel in range(n_channels):
        position = (image[:, channel].reshape(batch, -1).float().clamp(-1.0, 1.0) + 1.0) * (0.5 * (bins - 1))
        low = position.floor().clamp(max=bins - 2)
        upper_share = position - low
        index = low.long()[:, None].expand(batch, n_regions, -1)
        hist = weights.new_zeros(batch, n_regions, bins)
        hist.scatter_add_(2, index, weights * (1.0 - upper_share)[:, None])
        hist.scatter_add_(2, index + 1, weights * upper_share[:, None])
        out.append(hist.reshape(batch, -1))
    return torch.cat(out, dim=1)


def _mode(hist, centres, lowest):
    """Peak position of each row of ``hist`` among bins at or above ``lowest`` (batch,), refined by a
    parabola through the peak bin and its neighbours."""
    masked = torch.where(centres[None] >= lowest[:, None], hist, torch.zeros_like(hist))
    peak = masked.argmax(dim=1)
    inner = peak.clamp(1, hist.shape[1] - 2)
    left = masked.gather(1, (inner - 1)[:, None])[:, 0]
    mid = masked.gather(1, inner[:, None])[:, 0]
    right = masked.gather(1, (inner + 1)[:, None])[:, 0]
    curvature = left - 2.0 * mid + right
    shift = torch.where(curvature < 0, 0.5 * (left - right) / curvature.clamp(max=-_EPS), torch.zeros_like(mid))
    shift = torch.where(peak == inner, shift.clamp(-0.5, 0.5), torch.zeros_like(shift))
    step = centres[1] - centres[0]
    return centres[peak] + shift * step


def _fraction_below(hist, centres, threshold):
    """Share of each row's mass below ``threshold`` (batch,), reading the cumulative histogram linearly."""
    step = centres[1] - centres[0]
    cumulative = torch.cat([hist.new_zeros(hist.shape[0], 1), hist.cumsum(dim=1)], dim=1)
    cumulative = cumulative / (cumulative[:, -1:] + _EPS)
    # cumulative[:, k] is the mass of bins below edge k, edges half a bin below each centre
    edge = ((threshold - centres[0]) / step + 0.5).clamp(0.0, float(hist.shape[1]))
    lower = edge.floor().clamp(max=hist.shape[1] - 1)
    share = edge - lower
    lower = lower.long()[:, None]
    return (cumulative.gather(1, lower)[:, 0] * (1.0 - share) + cumulative.gather(1, lower + 1)[:, 0] * share)


def descriptors(hist_sums, n_channels, bins, hu_per_unit, hu_offset):
    """(batch, n_channels * 3) descriptors from ``histogram_sums`` output, in units of 100 HU or fractions.

    washout: peak of the tumor's non-necrotic part minus the liver's peak (negative = washout);
    necrotic_fraction: share of the tumor darker than the liver by more than NECROSIS_BELOW_LIVER_HU;
    rim_enhancement: share of the tumor rim brighter than the liver by more than RIM_ABOVE_LIVER_HU.
    All are zero where there is no tumor or no liver."""
    batch = hist_sums.shape[0]
    hist = hist_sums.reshape(batch, n_channels, len(REGIONS), bins)
    centres = torch.linspace(-1.0, 1.0, bins, device=hist.device) * hu_per_unit + hu_offset
    out = []
    for channel in range(n_channels):
        tumor, liver, rim = hist[:, channel, 0], hist[:, channel, 1], hist[:, channel, 2]
        core = (tumor - rim).clamp(min=0.0)
        present = ((tumor.sum(1) > 1.0) & (liver.sum(1) > 1.0)).float()
        liver_peak = _mode(liver, centres, torch.full_like(liver[:, 0], -1e9))
        necrosis_edge = liver_peak - NECROSIS_BELOW_LIVER_HU
        washout = (_mode(core, centres, necrosis_edge) - liver_peak) / 100.0
        necrotic = _fraction_below(core, centres, necrosis_edge)
        enhancing = 1.0 - _fraction_below(rim, centres, liver_peak + RIM_ABOVE_LIVER_HU)
        out.append(torch.stack([washout, necrotic, enhancing], dim=1) * present[:, None])
    return torch.cat(out, dim=1)
