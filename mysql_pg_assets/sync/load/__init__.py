"""Into PostgreSQL in one transaction: staging (binary COPY), the merge SQL, values PostgreSQL refuses, the
table's DDL and migrations, constraints, and what a load did (``result``)."""
