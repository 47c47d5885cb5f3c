"""Inference backends: the plugin protocol, the registry, hardware detection, and one
module per engine (``llamacpp``, ``mlx``)."""
