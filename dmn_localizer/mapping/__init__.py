"""Mapping: the view map and its .dmnmap file, keyframe selection."""
