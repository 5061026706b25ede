"""Run records: the run folder, typed results, atomic io, the environment, trackers."""
