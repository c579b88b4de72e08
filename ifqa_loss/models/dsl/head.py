"""DSL-FIQA's head (keys ``fc_score.*`` and ``fc_weight.*`` of ``IQA.pt``): a weighted average of token scores.

Each of the 576 tokens (256 decoder channels + the landmark scalar) gets a score f = ReLU(MLP(t)) and a weight
w = Sigmoid(MLP(t)); the crop's score is sum(f w) / sum(w). The score is not bounded above: real checkpoints
were trained on mean opinion scores min-max normalised to [0, 1], so they predict on roughly that scale.
"""
from __future__ import annotations

import torch
from torch import nn


def score_mlp(dim: int = 257) -> nn.Sequential:
    """``fc_score``: per-token score, >= 0."""
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(0.1), nn.Linear(dim, 1), nn.ReLU())


def weight_mlp(dim: int = 257) -> nn.Sequential:
    """``fc_weight``: per-token weight in (0, 1)."""
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(0.1), nn.Linear(dim, 1), nn.Sigmoid())


def weighted_average(token_score: torch.Tensor, token_weight: torch.Tensor) -> torch.Tensor:
    """(B, N, 1) scores and weights -> (B,) crop scores ``sum(f w) / sum(w)``."""
    return (token_score * token_weight).sum(dim=(1, 2)) / token_weight.sum(dim=(1, 2))
