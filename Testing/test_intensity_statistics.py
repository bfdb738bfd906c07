"""The response pathway's lesion-to-liver intensity contrasts: histograms that add up over tiles, and
descriptors that read known contrasts back from a phantom."""

import numpy as np
import pytest
import torch

from TACEResponseLib import inference, intensity_statistics
from TACEResponseLib.network import MultiDL

WINDOW = (-200.0, 300.0)
BINS = 26


def _normalised(hu):
    low, high = WINDOW
    return (np.asarray(hu, np.float32) - (low + high) / 2.0) * (2.0 / (high - low))


def _phantom(shape=(40, 40, 40), liver_hu=110.0, tumor_hu=75.0, necrosis_hu=20.0, rim_hu=145.0, noise=4.0):
    """Liver block with a spherical lesion: a necrotic centre, a viable shell and an enhancing rim."""
    z, y, x = np.indices(shape)
    radius = np.sqrt((z - 20) ** 2 + (y - 20) ** 2 + (x - 20) ** 2)
    hu = np.full(shape, -100.0, np.float32)  # fat around the liver
    liver = np.zeros(shape, np.float32)
    liver[4:36, 4:36, 4:36] = 1.0
    hu[liver > 0] = liver_hu
    tumor = (radius <= 10).astype(np.float32)
    hu[radius <= 10] = tumor_hu
    hu[radius <= 5] = necrosis_hu
    hu[(radius > 9) & (radius <= 10)] = rim_hu
    liver[tumor > 0] = 0.0
    hu += np.random.default_rng(0).normal(0.0, noise, shape).astype(np.float32)
    return hu, liver, tumor, radius


def _descriptors(hu, liver, tumor):
    image = torch.from_numpy(_normalised(hu))[None, None]
    liver_w, tumor_w = torch.from_numpy(liver)[None, None], torch.from_numpy(tumor)[None, None]
    regions = intensity_statistics.region_weights_for_histograms(liver_w, tumor_w)
    sums = intensity_statistics.histogram_sums(image, regions, BINS)
    half_width = (WINDOW[1] - WINDOW[0]) / 2.0
    return intensity_statistics.descriptors(sums, 1, BINS, half_width, (WINDOW[0] + WINDOW[1]) / 2.0)[0]


def test_histograms_keep_mass_and_mean():
    rng = np.random.default_rng(1)
    image = torch.from_numpy(rng.uniform(-1.2, 1.2, (2, 2, 10, 12, 14)).astype(np.float32))
    regions = torch.from_numpy(rng.random((2, 3, 10, 12, 14)).astype(np.float32))
    hist = intensity_statistics.histogram_sums(image, regions, BINS).reshape(2, 2, 3, BINS)
    centres = torch.linspace(-1.0, 1.0, BINS)
    for channel in range(2):
        weights = regions.reshape(2, 3, -1)
        values = image[:, channel].reshape(2, 1, -1).clamp(-1.0, 1.0)
        torch.testing.assert_close(hist[:, channel].sum(-1), weights.sum(-1), rtol=1e-5, atol=1e-3)
        # triangular bins keep the weighted mean exactly
        torch.testing.assert_close((hist[:, channel] * centres).sum(-1), (weights * values).sum(-1),
                                   rtol=1e-4, atol=1e-2)


def test_descriptors_read_known_contrasts():
    hu, liver, tumor, radius = _phantom()
    washout, necrotic, rim = _descriptors(hu, liver, tumor).tolist()
    assert washout == pytest.approx((75.0 - 110.0) / 100.0, abs=0.04)
    core = (radius <= 10) & ~((radius > 9) & (radius <= 10))
    # the rim here is the tumor's outer voxel layer as the erosion finds it, so compare with that layer
    assert necrotic == pytest.approx((radius[core] <= 5).mean(), abs=0.08)
    assert rim > 0.5


def test_descriptors_follow_the_contrasts():
    """Deeper washout, more necrosis and a brighter rim move their descriptors the right way; an absent
    tumor gives zeros."""
    base = _descriptors(*_phantom()[:3])
    deeper = _descriptors(*_phantom(tumor_hu=55.0)[:3])
    no_rim = _descriptors(*_phantom(rim_hu=75.0)[:3])
    no_necrosis = _descriptors(*_phantom(necrosis_hu=75.0)[:3])
    assert deeper[0] < base[0] - 0.1
    assert no_rim[2] < base[2] - 0.4
    assert no_necrosis[1] < base[1] - 0.1
    hu, liver, _, _ = _phantom()
    assert torch.count_nonzero(_descriptors(hu, liver, np.zeros_like(liver))) == 0


def test_histogram_sums_add_up_over_tiles():
    """With rim weights computed on the whole tile (one voxel of context), core sums add up exactly."""
    torch.manual_seed(0)
    net = MultiDL(channels=(4, 8, 16), intensity_bins=BINS).eval()
    hu, liver, tumor, _ = _phantom((32, 32, 32))
    image = torch.from_numpy(_normalised(hu))[None, None]
    liver_w, tumor_w = torch.from_numpy(liver)[None, None], torch.from_numpy(tumor)[None, None]
    with torch.no_grad():
        _, features, deep = net.forward_maps(image)
        whole = net.pooled_sums(features, deep, liver_w, tumor_w, image=image)
        regions = net.histogram_regions(liver_w, tumor_w)
        halves = sum(net.pooled_sums(features[..., s, :, :], deep[..., d, :, :], liver_w[..., s, :, :],
                                     tumor_w[..., s, :, :], image=image[..., s, :, :],
                                     histogram_regions=regions[..., s, :, :])
                     for s, d in ((slice(0, 16), slice(0, 4)), (slice(16, 32), slice(4, 8))))
    torch.testing.assert_close(whole, halves, rtol=1e-4, atol=1e-2)
    assert whole.shape[1] == net.n_region_sums + len(intensity_statistics.REGIONS) * BINS


def test_response_pathway_uses_the_descriptors():
    """The same features with a different lesion contrast give a different response logit; a network
    without intensity statistics keeps the old layout."""
    torch.manual_seed(0)
    net = MultiDL(channels=(4, 8, 16), intensity_bins=BINS).eval()
    hu, liver, tumor, _ = _phantom((32, 32, 32))
    volume = _normalised(hu)[None]
    mask = tumor
    _, _, with_lesion = inference.run_network(net, volume, "cpu", (32, 32, 32), 8, tumor_mask=mask)
    darker = _normalised(np.where(tumor > 0, hu - 40.0, hu))[None]
    _, _, with_darker = inference.run_network(net, darker, "cpu", (32, 32, 32), 8, tumor_mask=mask)
    with torch.no_grad():
        assert float(net.response_logit(with_lesion)) != pytest.approx(float(net.response_logit(with_darker)))
    plain = MultiDL(channels=(4, 8, 16))
    assert plain.head[0].in_features == net.head[0].in_features - len(intensity_statistics.DESCRIPTORS)
    assert not any("intensity" in key for key in plain.state_dict())
