"""Operator views and actions (role admin; support may read)."""
