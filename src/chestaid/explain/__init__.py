"""Explanations: Grad-CAM heat maps per finding (qualitative, not lesion masks) and their localisation scores."""
