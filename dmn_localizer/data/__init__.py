"""Datasets: episodes (contexts + query trajectory), shards on disk, streaming readers."""
