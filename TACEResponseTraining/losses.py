"""Multi-task loss: segmentation (soft Dice + cross-entropy) plus weighted BCE for the response."""

import torch
import torch.nn.functional as F


def soft_dice_loss(logits, target, classes=(1, 2), eps=1.0):
    """1 - mean soft Dice over the foreground classes, pooled over the batch (stable for absent tumors)."""
    probs = torch.softmax(logits.float(), dim=1)
    losses = []
    for cls in classes:
        p = probs[:, cls]
        t = (target == cls).float()
        intersection = (p * t).sum()
        losses.append(1.0 - (2.0 * intersection + eps) / (p.sum() + t.sum() + eps))
    return torch.stack(losses).mean()


def segmentation_loss(logits, target, dice_classes=(1, 2)):
    return soft_dice_loss(logits, target, dice_classes) + F.cross_entropy(logits.float(), target.long())


def response_loss(logits, response):
    """BCE over the samples whose response is known (response is NaN where unknown)."""
    known = ~torch.isnan(response)
    if not known.any():
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[known].float(), response[known])
