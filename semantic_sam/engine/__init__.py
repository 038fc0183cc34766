"""Training-engine support on top of detectron2's: exact-resume checkpointing and RNG state."""
from .checkpointer import CollectPerRankState, TrainingCheckpointer
from .rng_state import capture_rng_state, preserved_rng_state, restore_rng_state, seeded_rng_state

__all__ = [
    "CollectPerRankState",
    "TrainingCheckpointer",
    "capture_rng_state",
    "preserved_rng_state",
    "restore_rng_state",
    "seeded_rng_state",
]
