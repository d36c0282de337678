"""The feature-targeted (FT) attack: stage 1 picks a target head, stage 2 cancels its gradient
in feature space (``gc/feature.py``), stage 3 inverts the features into images (``invert.py``)."""
