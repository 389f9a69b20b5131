"""knetflow's version, on the ground floor so that any layer can name it."""

__version__ = "0.1.0"
