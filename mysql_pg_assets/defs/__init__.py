"""The Dagster layer: resources, the translator from plans to Dagster, the asset factory and its checks,
sensors and jobs. Thin: it calls the stages and reports; ``mysql_pg_assets.definitions`` assembles it."""
