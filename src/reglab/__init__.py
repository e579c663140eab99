"""reglab: what does each regularizer really do to a small image classifier?"""

__version__ = "0.1.0"
