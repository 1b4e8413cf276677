"""The bottom layer: metric policy (catalog), statistics and formatting leaves, the measurement-method
version, GPU-class facts, and the results model (phases, requests, results files). Imports nothing above it.
"""
