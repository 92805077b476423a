"""Model families: one module per family, registered by name (see `base.py`)."""
