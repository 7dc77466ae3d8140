"""The transport-neutral request API: parameter dataclasses (requests.py), delta/finish events
(events.py), error kinds (errors.py) and the served model that turns one into the other
(service.py, runs.py). gRPC, KServe and HTTP front ends are thin adapters over it."""
