"""Training by role."""
