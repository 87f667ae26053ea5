"""What MySQL has, mapped to PostgreSQL: casting rules, grants, foreign-key lineage and the table plans the
catalog discovers from ``information_schema``."""
