"""Does PostgreSQL hold what MySQL holds? Canonical values, parity (counts, checksums, sampled rows, schema),
drift decisions, and the checks a run needs before it starts (``preflight``). No Dagster here."""
