"""The live-KPI dashboard: a static page (`static/`) that draws the config's panels from a snapshot per time
range, the publisher that writes those snapshots from the stores (`publisher.py`; the pipeline's sections
shaped in `snapshot.py`, the `[[dashboard.panels]]` checked in `panels.py` and shaped per range in
`ranges.py`), and a read-only local server with Prometheus `/metrics` (`server.py`). Commands:
`streamkpi dashboard publish` and `streamkpi dashboard serve`.
"""
