"""Training with Lightning: batches, the LightningModule, and the trainer recipe."""
