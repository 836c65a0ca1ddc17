"""S6: what users would deploy instead of the service, doing the same deliveries."""
