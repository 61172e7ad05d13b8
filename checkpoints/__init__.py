"""Shipped models, installed as package data: ``checkpoints/NAME/`` holds ``model.safetensors`` (or
shards with an index), ``config.json`` and ``MODEL_CARD.md``. ``default`` is the model the server, the
CLI and the Python API use unless ``ODEFORMER_CHECKPOINT`` names another (DESIGN.md 3.4)."""
