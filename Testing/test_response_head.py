"""The logistic response pathway: penalised fit equal to scikit-learn's, standardisation stored in the
weights, and older hidden-layer weights still loading unchanged."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from TACEResponseLib.network import MultiDL
from TACEResponseTraining.response_head import fit_logistic_head

CHANNELS = (4, 8, 16)


def _cohort(n=80, seed=0):
    """Pooled sums of random volumes through a random network, and responses that depend on them."""
    torch.manual_seed(seed)
    net = MultiDL(channels=CHANNELS, head_hidden=0, intensity_bins=26).eval()
    rng = np.random.default_rng(seed)
    sums = []
    with torch.no_grad():
        for _ in range(n):
            x = torch.from_numpy(rng.normal(0.3, 0.4, (1, 1, 16, 16, 16)).astype(np.float32))
            _, features, deep = net.forward_maps(x)
            liver = torch.from_numpy(rng.random((1, 1, 16, 16, 16)).astype(np.float32))
            tumor = (1.0 - liver) * float(rng.random())
            sums.append(net.pooled_sums(features, deep, liver, tumor, image=x))
    sums = torch.cat(sums)
    inputs = net.response_inputs(sums).numpy()
    signal = inputs[:, 0] - inputs[:, 1] + 0.5 * inputs[:, -1]
    responses = (signal + rng.normal(0, signal.std(), n) > np.median(signal)).astype(int)
    return net, sums, responses, inputs


@pytest.mark.parametrize("l2,deep_factor", [(1.0, 1.0), (3.0, 100.0)])
def test_fit_matches_scikit_learn(l2, deep_factor):
    net, sums, responses, inputs = _cohort()
    fit_logistic_head(net, sums, responses, l2=l2, deep_l2_factor=deep_factor)
    standardised = (inputs - inputs.mean(0)) / np.where(inputs.std(0) > 1e-6, inputs.std(0), 1.0)
    # a penalty k times stronger on a column = the plain penalty on that column scaled by 1 / sqrt(k)
    column_scale = np.ones(inputs.shape[1])
    column_scale[net.deep_inputs] = 1.0 / np.sqrt(deep_factor)
    reference = LogisticRegression(C=1.0 / l2, tol=1e-10, max_iter=100000).fit(standardised * column_scale,
                                                                             responses)
    with torch.no_grad():
        ours = net.response_logit(sums).numpy()
    np.testing.assert_allclose(ours, reference.decision_function(standardised * column_scale), atol=2e-3)
    torch.testing.assert_close(net.head_input_mean, torch.from_numpy(inputs.mean(0)), rtol=1e-4, atol=1e-5)


def test_stronger_penalty_shrinks_the_deep_feature_weights():
    net, sums, responses, _ = _cohort()
    fit_logistic_head(net, sums, responses, l2=1.0, deep_l2_factor=1.0)
    plain = net.head.weight[0, net.deep_inputs].abs().sum().item()
    fit_logistic_head(net, sums, responses, l2=1.0, deep_l2_factor=1000.0)
    assert net.head.weight[0, net.deep_inputs].abs().sum().item() < 0.2 * plain


def test_older_weights_load_with_identity_standardisation():
    """Weights saved before the standardisation buffers existed load, and give the same logit."""
    torch.manual_seed(0)
    old = MultiDL(channels=CHANNELS, head_hidden=32).eval()
    state = {k: v for k, v in old.state_dict().items() if not k.startswith("head_input_")}
    new = MultiDL(channels=CHANNELS, head_hidden=32).eval()
    new.load_state_dict(state, strict=True)
    sums = torch.rand(3, old.n_region_sums) * 100
    with torch.no_grad():
        expected = old.head(old.response_inputs(sums)).squeeze(1)
        torch.testing.assert_close(new.response_logit(sums), expected)
