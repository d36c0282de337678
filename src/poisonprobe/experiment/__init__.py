"""Experiments: config schema, runner, results store."""
