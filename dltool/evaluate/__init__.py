"""Evaluation: exact metric sums merged across Spark tasks, and the tables and plots that report them."""
