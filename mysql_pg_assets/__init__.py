"""Keep PostgreSQL in sync with MySQL, every table a Dagster asset (see the README and ``definitions``)."""
