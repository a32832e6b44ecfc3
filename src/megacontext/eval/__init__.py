"""Evaluation: gist substitutability now; the side-by-side benchmark later."""
