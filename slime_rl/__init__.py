"""slime-rl: asynchronous RL post-training with a durable Redis trajectory buffer."""

__version__ = "0.1.0"
