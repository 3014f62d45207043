"""Payment providers behind one interface (``base.PaymentProvider``); ``registry.get_provider`` picks one."""
