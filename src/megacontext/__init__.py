"""MegaContext: unlimited, disk-backed memory for a frozen causal LLM at constant compute.

Importing the package is cheap; torch and transformers load only when a model is used.
"""

__version__ = "0.1.0"
