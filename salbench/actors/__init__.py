"""Ray Data actor classes: AttributeActor and ScoreActor (model stages), BokehActor and
FinalizeActor (CPU stages)."""

from salbench.actors.attribute import AttributeActor
from salbench.actors.cpu import BokehActor, FinalizeActor
from salbench.actors.score import ScoreActor

__all__ = ["AttributeActor", "BokehActor", "FinalizeActor", "ScoreActor"]
