"""Outbound webhooks: platforms subscribe to events; deliveries are signed with Standard Webhooks."""
