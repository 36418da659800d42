"""LightningDataModules yielding images in [-1, 1] (and labels where the data set has them)."""
