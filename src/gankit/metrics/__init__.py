"""Sample-quality and mode-collapse metrics (torchmetrics.Metric subclasses) and their feature extractors."""
