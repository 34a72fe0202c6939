"""Celery workers: the indexing stages as queues (scan -> embed -> store); see workers.app."""
