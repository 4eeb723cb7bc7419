"""classify: stage 2 of detect-then-classify. Crops in -> fine-grained labels, with an F1 report.

Importing ``classify`` registers `CropClassifier` (the saved Keras task model) with Keras, so
``keras.saving.load_model("RUN/model.keras")`` works with no other step.
"""

from classify.backbones import Backbone
from classify.data import ImageFolder, grouped_split, load_image_folder, split_image_folder
from classify.model import FineClassifier
from classify.prediction import ProbabilityPredictor
from classify.task import CropClassifier

__all__ = [
    "Backbone",
    "CropClassifier",
    "FineClassifier",
    "ImageFolder",
    "ProbabilityPredictor",
    "grouped_split",
    "load_image_folder",
    "split_image_folder",
]
