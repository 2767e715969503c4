"""Embedding spaces, fitted maps between them, calibration, and the bank of maps the service serves."""
