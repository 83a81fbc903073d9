"""hyperexport: train HyperFormer++ multi-task T5 models and ship each task as a plain graph."""

__version__ = "0.1.0"
