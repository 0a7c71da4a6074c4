"""Compute backends behind one contract (see `base.Backend`), and how to pick them by name."""
