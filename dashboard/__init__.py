"""The live-KPI dashboard: a static page (`static/`) that polls `snapshot.json`, the publisher that writes
that snapshot from the stores (`publisher.py`, shaping in `snapshot.py`), and a read-only local server with
Prometheus `/metrics` (`server.py`). Commands: `streamkpi dashboard publish` and `streamkpi dashboard serve`.
"""
