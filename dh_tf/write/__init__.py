"""Results back into tables: predictions (static and live), the engine write path, metrics figures."""
