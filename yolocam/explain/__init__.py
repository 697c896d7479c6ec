"""Explaining: the `Explainer` (the public entry point) and the folder pipeline that feeds it."""
