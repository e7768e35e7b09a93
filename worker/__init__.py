"""The bridge: ``EndpointBridge`` and ``FleetIndex`` actors written once against ``host``'s
small interface, the shared HTTP ``gateway``, and their two hosts — ``local_host`` (aiohttp +
SQLite files) and ``entry`` (Cloudflare Python Worker + Durable Objects)."""
