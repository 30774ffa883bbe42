"""Which rows, in what order, and how pages become batches: plan, pages, reader threads, epoch cache, batching, the loader."""
