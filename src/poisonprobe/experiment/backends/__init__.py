"""Where the units of a run execute: ``local.py`` in this process, ``ray.py`` as Ray tasks.
Both run a unit's cells with ``experiment/cell.py``."""
