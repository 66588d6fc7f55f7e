"""Dashboards (installed as ``autoaug.dashboards``): MLflow UI / optuna-dashboard launchers and the
HTML search report. Filled by later issues; nothing here yet."""
