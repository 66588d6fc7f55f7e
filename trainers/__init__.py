"""Proxy trials (installed as ``autoaug.trainers``): built-in data, the tiny VLM, the Lightning module
and the Ray Tune trainable. Filled by the proxy-task issue; nothing here yet."""
