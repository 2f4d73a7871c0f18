"""The worker runtime: the Celery app with its queue routing and its one task (``app``), routes,
provider calls, reliability, the provider loader, the embedded broker, Flower defaults and the status
report.

Nothing is imported here: building the Celery app reads the settings, and the embedded broker
must be importable before they are final.
"""
