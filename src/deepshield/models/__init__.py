"""Models: the classifier network (torch, training side) and the model bundle format (both sides)."""
