"""Gradient canceling: the objective (the victim's first-order condition at a target head,
in closed form), its feature-space optimiser (FT stage 2) and the input-space attack."""
