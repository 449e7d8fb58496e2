"""The data layer: sources, splits, balancing, the image decoder, the cache, datasets, synthetic data."""
