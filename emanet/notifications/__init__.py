"""Notifications: in-app, e-mail and SMS, for the people an event concerns."""
