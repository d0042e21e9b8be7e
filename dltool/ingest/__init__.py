"""`dltool ingest`: the verb (run.py), the readers' jobs on Spark (files.py, tables.py, text.py) and what they
report (results.py). Every job writes its shards through the one sink in dltool/shards/sink.py."""
