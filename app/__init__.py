"""ModelDeck: a model resource manager and dashboard for local AI."""

__version__ = "0.1.0"
