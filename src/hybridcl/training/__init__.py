"""Training: one task's loop, its train state and the loss."""
