"""One pipeline, two runners: the steps around the engine (steps.py), the deadline index
(deadlines.py), pending pings (pending.py) and the records the pipeline sends itself
(records.py), over tables given in (tables.py). Pure: no Kafka, no clock (import-linter)."""
