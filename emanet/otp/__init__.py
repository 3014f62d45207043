"""One-time passwords over SMS (seed 001): login, phone verification and step-up confirmations."""
