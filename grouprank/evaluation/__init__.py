"""Ranking metrics (through ir-measures) and judge agreement."""
