"""Policy search: declarative spaces, Optuna inside Ray Tune, MLflow records, export (docs/ARCHITECTURE.md, "The search, in layers")."""
