"""Training: one shared loop (`loop.train`) that GistNet and LensNet tasks plug into."""
