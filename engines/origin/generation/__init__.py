"""Drawing with a trained Origin model: the sampler, the enhancement chain, and ``app.py generate``."""
