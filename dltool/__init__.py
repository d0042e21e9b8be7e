"""dltool: deep-learning ETL and training on Spark, driven by one YAML file."""

__version__ = "0.1.0"
