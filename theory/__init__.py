"""geomem.theory: closed-form and numerical theory of memorization in diffusion (no torch)."""

from .manifold import LinearManifold
from .schedules import DDPM, VE, VP, GeometricVE, Schedule, get_schedule

__all__ = [
    "DDPM",
    "VE",
    "VP",
    "GeometricVE",
    "LinearManifold",
    "Schedule",
    "get_schedule",
]
