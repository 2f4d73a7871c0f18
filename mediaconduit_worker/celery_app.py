"""``celery -A mediaconduit_worker.celery_app worker|flower``: the app lives in ``worker/app.py``."""

from .worker.app import app

__all__ = ["app"]
