"""Every fact that two processes share: names, labels, annotations, MLflow tags, aliases, step names, exit codes,
trigger names and the metric catalogue. Pure, the bottom layer: imported by all, imports nothing of ferry."""
