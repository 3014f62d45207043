"""Emanet: open-source escrow payments platform."""
