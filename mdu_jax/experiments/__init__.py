"""Experiments that chain training and evaluation (sweeps); their command lines are the entry points."""
