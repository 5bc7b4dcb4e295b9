"""Image classifiers behind one Protocol (`ImageClassifier`)."""

from genguard.guard.classifiers.base import ImageClassifier

__all__ = ["ImageClassifier"]
