"""The DHT: namespace keys, the provider walk, routing-table refresh, the crawler."""
