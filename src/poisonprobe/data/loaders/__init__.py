"""Dataset loaders (one module per source format); importing a module registers it."""
