"""Soft labels and what is measured on soft maps: metrics, operating points, disagreement."""
