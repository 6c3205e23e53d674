"""The shared ground every stage stands on: errors, the atomic writer, run folders and their lock,
runtime (device, precision, seeds, random streams), provenance, stop signals, the checkpoint file format,
which callables a saved config may name (trust), and the study storage. Imports nothing above it."""
