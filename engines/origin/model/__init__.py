"""The Origin network and its on-disk form: UNet, experts, GNN, DataFlow, encoders, config, checkpoints.

Nothing here trains or samples: ``training/`` and ``generation/`` build on this room, never the reverse.
"""
