"""Image classifiers behind one Protocol (`ImageClassifier`)."""

from guard.classifiers.base import ImageClassifier

__all__ = ["ImageClassifier"]
