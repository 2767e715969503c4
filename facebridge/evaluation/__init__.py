"""Verification protocols and metrics (LFW 10-fold, ROC, EER, TAR@FAR)."""
