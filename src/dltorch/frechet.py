"""The Fréchet distance between two Gaussians fitted to feature vectors (the formula of FID, Heusel et al. 2017):
|mu1 - mu2|^2 + tr(C1) + tr(C2) - 2 tr((C1 C2)^(1/2)). Computed with symmetric eigen-decompositions in float64:
tr((C1 C2)^(1/2)) = tr((S C2 S)^(1/2)) with S = C1^(1/2), and S C2 S is symmetric positive semi-definite, so its
square root's trace is the sum of the square roots of its eigenvalues; no scipy, no complex parts to discard."""

from __future__ import annotations

import torch


def gaussian(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance (unbiased, as numpy's cov) of rows of features, in float64."""
    rows = features.double()
    if rows.ndim != 2 or len(rows) < 2:
        raise ValueError(f"features must be (N >= 2, D), not {tuple(features.shape)}")
    return rows.mean(0), torch.cov(rows.T).reshape(rows.shape[1], rows.shape[1])


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(first: tuple[torch.Tensor, torch.Tensor], second: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Between Gaussians given as (mean, covariance)."""
    (mean1, cov1), (mean2, cov2) = first, second
    root = _sqrt_psd(cov1)
    cross = torch.linalg.eigvalsh(root @ cov2 @ root).clamp(min=0).sqrt().sum()
    return float((mean1 - mean2).pow(2).sum() + cov1.trace() + cov2.trace() - 2 * cross)


def frechet_distance_of(features1: torch.Tensor, features2: torch.Tensor) -> float:
    """Between the Gaussians fitted to two sets of feature rows."""
    return frechet_distance(gaussian(features1), gaussian(features2))
