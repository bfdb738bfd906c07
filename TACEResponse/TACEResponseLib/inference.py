"""Tiled network pass over a preprocessed volume: class probabilities and pooled response statistics.

Shared by the Predictor and by training's validation, so what training measures is what users get.
"""

import numpy as np
import torch

from .network import LIVER, TUMOR, region_weights
from .tiling import plan_tiles


@torch.inference_mode()
def run_network(network, volume, device, max_tile, margin, tumor_mask=None, on_tile=None, liver_mask=None,
                valid=None):
    """Run one network over ``volume`` (channels, z, y, x; sizes multiples of network.size_multiple).

    Returns (liver probability, tumor probability, pooled sums tensor of shape (1, n)). ``tumor_mask`` and
    ``liver_mask`` (z, y, x) replace the predicted tumor and liver in the pooled statistics only. ``valid``
    (z, y, x sizes from the start) is the part that is image, not padding; only it is pooled.
    """
    multiple = network.size_multiple
    tiles = list(plan_tiles(volume.shape[1:], max_tile, margin, multiple))
    liver = np.zeros(volume.shape[1:], np.float32)
    tumor = np.zeros(volume.shape[1:], np.float32)
    sums = None
    use_amp = str(device).startswith("cuda")
    for index, (tile, core) in enumerate(tiles):
        x = torch.from_numpy(np.ascontiguousarray(volume[(slice(None),) + tile]))[None].to(device)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
            seg_logits, features, deep = network.forward_maps(x)
        inner = tuple(slice(c.start - t.start, c.stop - t.start) for c, t in zip(core, tile))
        inner_deep = tuple(slice(s.start // multiple, s.stop // multiple) for s in inner)
        keep = (slice(None), slice(None))
        mask_tile, liver_tile = (None if mask is None else
                                 torch.from_numpy(np.ascontiguousarray(mask[tile]))[None, None].to(device)
                                 for mask in (tumor_mask, liver_mask))
        # weights on the whole tile: the histogram regions look one voxel beyond the core
        liver_w, tumor_w = region_weights(seg_logits.float(), mask_tile, liver_tile)
        if valid is not None:
            liver_w, tumor_w = (_without_padding(w, tile, valid) for w in (liver_w, tumor_w))
        regions = network.histogram_regions(liver_w, tumor_w)
        tile_sums = network.pooled_sums(features[keep + inner].float(), deep[keep + inner_deep].float(),
                                        liver_w[keep + inner], tumor_w[keep + inner], image=x[keep + inner],
                                        histogram_regions=None if regions is None else regions[keep + inner])
        seg_core = seg_logits[keep + inner].float()
        sums = tile_sums if sums is None else sums + tile_sums
        probs = torch.softmax(seg_core, dim=1)[0].cpu().numpy()
        liver[core] = probs[LIVER]
        tumor[core] = probs[TUMOR]
        if on_tile:
            on_tile((index + 1) / len(tiles))
    return liver, tumor, sums


def _without_padding(weights, tile, valid):
    """``weights`` (1, 1, z, y, x) of ``tile`` with the voxels at or beyond ``valid`` set to zero: the padding
    repeats the edge slice, which must not count twice in the pooled statistics."""
    for axis, (part, size) in enumerate(zip(tile, valid)):
        if part.stop > size:
            index = [slice(None)] * weights.dim()
            index[2 + axis] = slice(max(size - part.start, 0), None)
            weights = weights.clone()
            weights[tuple(index)] = 0.0
    return weights


@torch.inference_mode()
def response_probability(network, sums):
    return float(torch.sigmoid(network.response_logit(sums.float())).cpu()[0])
