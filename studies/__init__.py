"""Experiments over whole runs, each stage a ``proctor`` subprocess: the learning recipe (``proctor learn``)
and the ablations (``proctor study``), with their paired statistics and reports."""
