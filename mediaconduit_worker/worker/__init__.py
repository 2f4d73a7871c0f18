"""The worker runtime: the Celery app (``app``) and its one task (``tasks``), queue routing,
reliability, the provider loader, the embedded broker, Flower defaults and the status report.

Nothing is imported here: building the Celery app reads the settings, and the embedded broker
must be importable before they are final.
"""
