"""Spark: session builder, ingest job, progress."""
