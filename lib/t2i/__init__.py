"""t2i: the text-to-image course's library (shapes world, judge, models, training).

Serves every notebook; `t2i.core.recipe` lists its models.
"""

__version__ = "0.1.0"
