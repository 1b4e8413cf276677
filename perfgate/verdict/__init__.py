"""Verdicts: SLO sets and their physical floors, baselines, identity vs change, the gate and A/B statistics.
Policy only: tables are rendered in perfgate.report. Imports core, models, serving and load, never report or run.
"""
