"""A local Binance USDT-M futures venue for testing the live adapter: the protocol, auth, matching, faults."""
