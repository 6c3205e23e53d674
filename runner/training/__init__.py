"""The training stage: job (one run's set-up and record), loop (epochs, micro-batches, updates),
optim, checkpoint (training state), distributed (torchrun), trial
(a sweep trial's heartbeat and pruning)."""
