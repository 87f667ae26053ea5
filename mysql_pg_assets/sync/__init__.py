"""The data path, one stage a module, in order: spec → catalog → extract → transform → validate → load;
``pipeline`` runs them for one table. No module here imports Dagster."""
