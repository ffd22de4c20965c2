"""Machine learning on the lake: labels, training, the model registry, and models in the decision path."""
