"""CA and broker certificates (the ``cryptography`` package)."""
