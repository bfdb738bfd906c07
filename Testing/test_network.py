"""MultiDL shapes, the external tumor mask path, and tiling that partitions the volume."""


import numpy as np
import pytest
import torch

from TACEResponseLib import inference
from TACEResponseLib.network import MultiDL, region_weights
from TACEResponseLib.tiling import plan_tiles


@pytest.mark.parametrize("in_channels", [1, 2])
def test_shapes(in_channels):
    torch.manual_seed(0)
    net = MultiDL(in_channels=in_channels, channels=(4, 8, 16)).eval()
    x = torch.randn(2, in_channels, 32, 24, 16)
    seg, logit = net(x)
    assert seg.shape == (2, 3, 32, 24, 16)
    assert logit.shape == (2,)
    maps, features, deep = net.forward_maps(x)
    assert features.shape == (2, 4, 32, 24, 16)
    assert deep.shape == (2, 16, 8, 6, 4)


def test_external_tumor_mask_changes_response_and_weights():
    torch.manual_seed(0)
    net = MultiDL(channels=(4, 8, 16)).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    mask = torch.zeros(1, 1, 32, 32, 32)
    mask[..., 8:20, 8:20, 8:20] = 1
    with torch.no_grad():
        seg, predicted_logit = net(x)
        _, masked_logit = net(x, tumor_mask=mask)
    assert not torch.allclose(predicted_logit, masked_logit)
    liver_w, tumor_w = region_weights(seg, mask)
    assert torch.equal(tumor_w, mask)
    assert float(liver_w[mask > 0].max()) == 0.0


def test_pooled_sums_are_additive():
    """Summing the statistics of two halves equals the statistics of the whole."""
    torch.manual_seed(0)
    net = MultiDL(channels=(4, 8, 16)).eval()
    with torch.no_grad():
        _, features, deep = net.forward_maps(torch.randn(1, 1, 32, 32, 32))
        liver, tumor = torch.rand(1, 1, 32, 32, 32), torch.rand(1, 1, 32, 32, 32) * 0.3
        whole = net.pooled_sums(features, deep, liver, tumor)
        halves = sum(net.pooled_sums(features[..., s, :, :], deep[..., d, :, :], liver[..., s, :, :], tumor[..., s, :, :])
                     for s, d in ((slice(0, 16), slice(0, 4)), (slice(16, 32), slice(4, 8))))
    torch.testing.assert_close(whole, halves, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("shape,tile", [((64, 48, 32), (32, 32, 32)), ((160, 96, 48), (64, 64, 64)),
                                        ((32, 32, 32), (128, 128, 128))])
def test_tile_cores_partition_the_volume(shape, tile):
    count = np.zeros(shape, int)
    for tile_slices, core in plan_tiles(shape, tile, 8, 8):
        for t, c, length, limit in zip(tile_slices, core, shape, tile):
            assert t.start <= c.start < c.stop <= t.stop <= length
            assert t.stop - t.start <= limit
            assert t.start % 8 == 0 and c.start % 8 == 0
        count[core] += 1
    assert (count == 1).all()


def test_tiled_inference_matches_whole_volume_closely():
    """Tiles with context margins give nearly the same probabilities as one pass (instance norm differs)."""
    torch.manual_seed(0)
    net = MultiDL(channels=(4, 8, 16)).eval()
    volume = np.random.default_rng(0).normal(size=(1, 64, 64, 32)).astype(np.float32)
    whole = inference.run_network(net, volume, "cpu", (64, 64, 32), 8)
    tiled = inference.run_network(net, volume, "cpu", (48, 48, 32), 8)
    assert whole[2].shape == tiled[2].shape
    assert np.abs(whole[0] - tiled[0]).mean() < 0.05


def test_padding_beyond_valid_is_not_pooled():
    """The padding to the size step repeats the edge slice; it must not count in the response statistics."""
    torch.manual_seed(0)
    net = MultiDL(channels=(4, 8, 16)).eval()
    volume = np.random.default_rng(0).normal(size=(1, 32, 32, 32)).astype(np.float32)
    everywhere = np.ones((32, 32, 32), np.float32)
    for tile, margin in (((32, 32, 32), 8), ((16, 32, 32), 0)):  # one tile, and tiles that end in the padding
        _, _, sums = inference.run_network(net, volume, "cpu", tile, margin, tumor_mask=0 * everywhere,
                                           liver_mask=everywhere, valid=(27, 32, 30))
        # the last three statistics: tumor weight, liver weight, organ weight at the deep level
        assert sums[0, -3:].tolist() == [0.0, 27 * 32 * 30, 27 * 32 * 30]


def test_training_metrics_match_scikit_learn():
    from sklearn.metrics import roc_auc_score

    from TACEResponseTraining import metrics

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200) + 0.4 * labels, 1)  # rounded: many ties
    assert metrics.roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    cutoff, j = metrics.youden_cutoff(labels, scores)
    predicted = scores >= cutoff
    assert j == pytest.approx(predicted[labels == 1].mean() + (~predicted[labels == 0]).mean() - 1)
    assert metrics.dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    assert metrics.dice([1, 1, 0], [1, 0, 0]) == pytest.approx(2 / 3)
