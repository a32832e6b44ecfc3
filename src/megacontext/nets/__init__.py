"""Learned networks (torch): GistNet now, LensNet later. Each saves safetensors + a JSON card."""
