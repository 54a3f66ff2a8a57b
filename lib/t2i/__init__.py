"""t2i: the text-to-image course's library (shapes world, judge, models, training)."""

__version__ = "0.1.0"
