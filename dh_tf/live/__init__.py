"""Live tables: follow the rows a table adds, as batches (the engine side lives in the sources)."""
