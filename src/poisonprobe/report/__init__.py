"""Reports: markdown tables, plots and image grids."""
