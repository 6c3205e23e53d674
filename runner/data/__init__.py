"""The data stage: datasets (what the samples are), transforms (what an image becomes),
loaders (in which order, in micro-batches) and introspection (labels, files, class names)."""
