"""The training engine: events, compiled steps, checkpoints and the loop."""
