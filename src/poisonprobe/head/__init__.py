"""The victim's head: model selection for the probe recipes (more moves here in round 2)."""
