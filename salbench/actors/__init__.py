"""Ray Data actor classes: AttributeActor (model stage) and BokehActor (CPU stage)."""

from salbench.actors.attribute import AttributeActor
from salbench.actors.cpu import BokehActor

__all__ = ["AttributeActor", "BokehActor"]
