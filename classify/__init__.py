"""classify: stage 2 of detect-then-classify. Crops in -> fine-grained labels, with an F1 report."""

from classify.backbones import Backbone

__all__ = ["Backbone"]
