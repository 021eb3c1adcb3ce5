"""The synthetic shop: generated customers and events with known ground truth."""
