"""What every stage stands on: settings, errors, SQL quoting and binding, connections, the project's own
tables in PostgreSQL, alerts. Knows nothing of MySQL's tables or of Dagster."""
