"""The demo: small digits classifiers as TF Serving SavedModels, and `python -m demo`."""
