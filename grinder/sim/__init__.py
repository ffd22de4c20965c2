"""Simulated venue: order book replay with our orders, queue position, latency, fees and the event loop."""
