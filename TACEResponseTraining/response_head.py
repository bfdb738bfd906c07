"""Fitting a logistic response pathway on whole-case statistics: penalised maximum likelihood.

The pathway's inputs are standardised with the training cases' statistics (stored in the network, so
prediction applies the same), then a ridge-penalised logistic model is fitted to convergence. A cohort
of a few hundred cases cannot support 128 free weights on the deepest encoder features as well as on the
lesion's own statistics, so those weights carry a stronger penalty (``deep_l2_factor``). The fit is
convex: no epochs to choose, no selection on the validation cases, the same answer every run.
"""

import torch
import torch.nn.functional as F


def standardise_inputs(model, sums):
    """Set the network's input standardisation from these cases; returns the standardised inputs."""
    with torch.no_grad():
        inputs = model.response_inputs(sums.float())
        mean = inputs.mean(dim=0)
        scale = inputs.std(dim=0, unbiased=False)
        scale = torch.where(scale > 1e-6, scale, torch.ones_like(scale))  # constant inputs stay as they are
        model.head_input_mean.copy_(mean)
        model.head_input_scale.copy_(scale)
        return (inputs - mean) / scale


def fit_logistic_head(model, sums, responses, l2=1.0, deep_l2_factor=100.0):
    """Fit ``model.head`` (an nn.Linear) by L-BFGS to: mean BCE + l2 / (2 n) * sum(penalty_j * w_j^2), where
    the penalty is ``deep_l2_factor`` on the deepest encoder features and 1 elsewhere (the intercept is
    free). In scikit-learn's terms, l2 = 1 / C on the standardised inputs."""
    inputs = standardise_inputs(model, sums)
    target = torch.as_tensor(responses, dtype=torch.float32)
    penalty = torch.ones(inputs.shape[1])
    penalty[model.deep_inputs] = float(deep_l2_factor)
    weight = torch.zeros(inputs.shape[1], requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=500, tolerance_grad=1e-9,
                                  tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")
    scale = float(l2) / (2.0 * len(target))

    def objective():
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(inputs @ weight + bias, target) \
            + scale * (penalty * weight ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    with torch.no_grad():
        model.head.weight.copy_(weight[None])
        model.head.bias.copy_(bias)
    return float(objective().detach())
