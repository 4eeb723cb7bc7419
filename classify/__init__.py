"""classify: stage 2 of detect-then-classify. Crops in -> fine-grained labels, with an F1 report."""

from classify.backbones import Backbone
from classify.data import ImageFolder, grouped_split, load_image_folder, split_image_folder
from classify.model import FineClassifier
from classify.task import CropClassifier

__all__ = ["Backbone", "FineClassifier", "ImageFolder", "grouped_split", "load_image_folder", "split_image_folder"]
