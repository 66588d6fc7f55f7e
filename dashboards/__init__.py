"""Dashboards (installed as ``autoaug.dashboards``): the MLflow UI and optuna-dashboard launcher
(`autoaug ui`, `ui.py`) and the self-contained HTML search report (`autoaug report`, `report.py`);
`sources.py` opens a search's records read-only for both."""
