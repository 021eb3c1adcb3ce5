"""churnstream: a streaming, real-time churn-risk pipeline for online shops."""

__version__ = "0.1.0"
