"""Policy search (DESIGN §7): declarative spaces, Optuna inside Ray Tune, MLflow records, export."""
