"""Locust load tests of the embedding service, built on the project's client."""
