"""The data plane: event producer with spill journal, feedback API, collector, DuckDB store, snapshots."""
