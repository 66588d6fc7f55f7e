"""Search state and records (installed as ``autoaug.storage``): storage URL resolution, SQLAlchemy
engines and the MLflow tracking set-up. Filled by the search issue; nothing here yet."""
