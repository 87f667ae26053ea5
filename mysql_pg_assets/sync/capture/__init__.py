"""Change capture: the binlog followed into PostgreSQL (binlog → images → apply; stream runs them)."""
